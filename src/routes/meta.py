"""The API describing itself: an index for browsers, a health check, the OpenAPI document."""

from __future__ import annotations

import time

from app import NAME, VERSION, Context
from openapi import build_openapi
from web import Response, json_response


async def index(ctx: Context) -> Response:
    return json_response(
        {
            "name": NAME,
            "version": VERSION,
            "docs": "/openapi.json",
            "health": "/health",
            "routes": [
                {"method": spec.method, "path": spec.path, "summary": spec.summary}
                for spec in ctx.app.routes
            ],
        }
    )


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
    return json_response(build_openapi(ctx.app.routes))
