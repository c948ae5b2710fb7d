"""Neon's WebSocket mode: the driver's `Pool` and `Client` speak the Postgres wire
protocol over binary WebSocket frames; a session holds one pooled server connection and
copies bytes both ways, reading messages only as far as it must (see `session`)."""
