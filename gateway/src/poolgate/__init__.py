"""Self-hostable PostgreSQL connection pool behind Neon's SQL-over-HTTP protocol."""
