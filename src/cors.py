"""Cross-origin use of the API from browsers.

The API is public JSON without cookies or other ambient credentials, so any origin may
call it (`Access-Control-Allow-Origin: *`, never with credentials). `OPTIONS` on a routed
path answers 204 with `Allow`; when it is a CORS preflight, also with the methods and
request headers the API accepts.
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOWED_REQUEST_HEADERS = "content-type, cache-control, idempotency-key"
EXPOSED_RESPONSE_HEADERS = (
    "x-request-id, location, retry-after, x-cache-status, age, idempotent-replayed"
)
PREFLIGHT_MAX_AGE_SECONDS = 86400

RESPONSE_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": EXPOSED_RESPONSE_HEADERS,
}


def options_headers(allowed: tuple[str, ...], request_headers: Mapping[str, str]) -> dict[str, str]:
    """The answer to `OPTIONS`: `Allow`, and the preflight's headers if it is one."""
    headers = {"allow": ", ".join(allowed)}
    if "origin" in request_headers and "access-control-request-method" in request_headers:
        headers |= {
            "access-control-allow-methods": ", ".join(allowed),
            "access-control-allow-headers": ALLOWED_REQUEST_HEADERS,
            "access-control-max-age": str(PREFLIGHT_MAX_AGE_SECONDS),
        }
    return headers
