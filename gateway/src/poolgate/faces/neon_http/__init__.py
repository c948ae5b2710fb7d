"""Neon's SQL-over-HTTP protocol (`POST /sql`, `../shared/PROTOCOL.md`) and poolgate's
additions on the same listener (`/transaction`, `/invalidate`, health, metrics). `app`
also builds the gateway's core and hands WebSocket upgrades to `faces.neon_ws`."""
