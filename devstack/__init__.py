"""The local stack: embedded PostgreSQL, the gateway, and (later) the Worker, on loopback."""
