"""The API describing itself: an index for browsers, a health check, the OpenAPI document."""

from __future__ import annotations

import time

from app import NAME, VERSION, Context
from openapi import build_openapi, openapi_path
from web import JSON_CONTENT_TYPE, Response, json_response


async def index(ctx: Context) -> Response:
    """JSON for API clients; a small page for a browser (one that asks for HTML first)."""
    if wants_html(ctx.request.headers.get("accept", "")):
        return Response(200, _INDEX_PAGE, {"content-type": "text/html; charset=utf-8"})
    routes = ctx.app.routes
    body = ctx.app.encoded_once(
        "index",
        lambda: {
            "name": NAME,
            "version": VERSION,
            "explorer": "/docs",
            "openapi": "/openapi.json",
            "health": "/health",
            "routes": [
                {"method": spec.method, "path": openapi_path(spec.path), "summary": spec.summary}
                for spec in routes
            ],
        },
    )
    return Response(200, body, {"content-type": JSON_CONTENT_TYPE})


def wants_html(accept: str) -> bool:
    """Whether `text/html` comes before any JSON in an Accept header (browsers send
    `text/html,...`; curl sends `*/*`, fetch and API clients JSON or nothing)."""
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            return True
        if media in ("application/json", "*/*"):
            return False
    return False


_INDEX_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{NAME}</title>
<link rel="icon" href="/favicon.ico">
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
  padding: 0 1rem; }}
code {{ background: #f3f3f3; padding: 0 .25rem; border-radius: 3px; }}
a {{ color: #0b57d0; }}
</style>
</head>
<body>
<h1>{NAME} <small>{VERSION}</small></h1>
<p>A JSON API for users, posts and logs, on PostgreSQL through a connection pool.</p>
<ul>
<li><a href="/docs">API explorer</a>: every route, with a form to send each request</li>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI 3.1 document</li>
<li><a href="/health">/health</a>: one database round trip</li>
</ul>
<p>API clients asking for <code>/</code> get this index as JSON.</p>
</body>
</html>
""".encode()


async def health(ctx: Context) -> Response:
    """One database round trip through the pool; its latency as the Worker sees it."""
    started = time.perf_counter()
    row = await ctx.db.query_one("SELECT 1 AS ok, now() AS database_time")
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    assert row is not None
    return json_response(
        {
            "status": "ok",
            "database": {"reachable": True, "latency_ms": latency_ms, "time": row["database_time"]},
        }
    )


async def openapi(ctx: Context) -> Response:
    routes = ctx.app.routes
    body = ctx.app.encoded_once("openapi", lambda: build_openapi(routes))
    return Response(200, body, {"content-type": JSON_CONTENT_TYPE})
