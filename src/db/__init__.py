"""PostgreSQL over HTTP: Neon's SQL-over-HTTP protocol, against Neon or our gateway."""
