"""Which requests are WebSocket sessions, and the API key they present.

Neon's driver opens `wss://<wsProxy>` on any path (`/v2` by default, `/v1` for older
ones); a browser's WebSocket cannot send headers, so with `--api-keys` the key comes in
the URL's `api_key` query parameter (a `wsProxy` function's return value is used as the
URL as is: `(host) => "gw.example.com/v2?api_key=KEY"`), or in `Authorization: Bearer`
from clients that can send it. The key is checked by the same constant-time rule as
`/sql`'s header, which itself never accepts a query parameter.
"""

from __future__ import annotations

from aiohttp import web

from poolgate.core.api_keys import require_api_key


def is_session_request(request: web.BaseRequest, http_paths: frozenset[str]) -> bool:
    """A WebSocket upgrade on a path that is not one of the gateway's HTTP routes."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    return request.path not in http_paths and not request.path.startswith("/transaction")


def require_session_key(request: web.BaseRequest, keys: tuple[str, ...]) -> None:
    """Raises Unauthorized (401, before the upgrade) without one of `keys`."""
    headers: dict[str, str] = {}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    elif "api_key" in request.query:
        headers["Authorization"] = f"Bearer {request.query['api_key']}"
    require_api_key(headers, keys)
