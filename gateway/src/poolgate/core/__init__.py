"""The core every face shares and none re-implements: the pools and their bounds, the
credential check and the failed-login throttle, interactive transactions, statements run
within one deadline and their answer encoded, the cache and its invalidation, metrics and
the request log. Nothing here reads a client protocol: faces translate theirs into
`requests` and call in; errors are `errors.GatewayError`, which each face answers in its
own format."""
