"""The HTTP face of the gateway: `/sql` (Neon's protocol), health, readiness, metrics.

Errors become responses in exactly one place, `_answer_error`; every response carries a
`Neon-Request-Id`, and every request produces one structured log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from psycopg import pq
from psycopg.conninfo import make_conninfo

from poolgate.api_keys import require_api_key
from poolgate.cache import Clock, QueryCache
from poolgate.cache_stores import CacheStore, MemoryStore, RedisStore
from poolgate.config import Settings
from poolgate.errors import (
    BadRequest,
    BodyTimeout,
    GatewayError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    Unavailable,
)
from poolgate.json_server import parse_failure
from poolgate.metrics import CONTENT_TYPE, Metrics
from poolgate.pool import PoolRegistry
from poolgate.sql_service import SqlService

log = logging.getLogger("poolgate.http")

JSON_TYPE = "application/json"
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, POST",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Neon-Connection-String, Neon-Raw-Text-Output, "
        "Neon-Array-Mode, Neon-Batch-Isolation-Level, Neon-Batch-Read-Only, "
        "Neon-Batch-Deferrable, Poolgate-Cache-TTL, Poolgate-Cache-SWR, Poolgate-Cache-Tags, "
        "Poolgate-Invalidate-Tags"
    ),
    "Access-Control-Expose-Headers": "Neon-Request-Id, Poolgate-Cache-Status, Age",
    "Access-Control-Max-Age": "86400",
}

_OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

SETTINGS = web.AppKey("settings", Settings)
POOLS = web.AppKey("pools", PoolRegistry)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", SqlService)
REQUEST_ID = web.RequestKey("request_id", str)
ROWS = web.RequestKey("rows", object)  # int, or None for requests without rows

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_store(settings: Settings) -> CacheStore | None:
    if settings.cache == "off":
        return None
    if settings.cache == "memory":
        return MemoryStore(settings.cache_max_bytes)
    return RedisStore(settings.cache)


def create_app(settings: Settings, clock: Clock = time.time) -> web.Application:
    """The gateway. `clock` dates cache entries (tests pass one they control)."""
    pools = PoolRegistry(settings)
    store = make_store(settings)
    cache = QueryCache(store, clock) if store is not None else None
    app = web.Application(
        client_max_size=settings.max_request_bytes, middlewares=[_request_middleware]
    )
    app[SETTINGS] = settings
    app[POOLS] = pools
    app[SERVICE] = SqlService(settings, pools, cache)
    app[METRICS] = Metrics(pools, cache)
    app.router.add_route("*", "/sql", _sql)
    app.router.add_post("/invalidate", _invalidate)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_pool_lifecycle)
    return app


async def _pool_lifecycle(app: web.Application) -> AsyncIterator[None]:
    pools = app[POOLS]
    interval = min(30.0, app[SETTINGS].idle_timeout / 2)

    cache = app[SERVICE].cache

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            await pools.sweep()
            if cache is not None:
                await cache.purge_expired()

    sweeper = asyncio.create_task(sweep_forever())
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    if cache is not None:
        await cache.drain()
    await pools.close()
    if cache is not None:
        await cache.store.close()


@web.middleware
async def _request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    request[ROWS] = None
    started = time.perf_counter()
    sqlstate = None
    try:
        response = await handler(request)
        outcome = "ok"
    except asyncio.CancelledError:
        _record(request, 499, started, "client_closed", None)
        raise
    except Exception as exc:
        error = _as_gateway_error(exc)
        response = _answer_error(error)
        outcome = _outcome_name(error)
        sqlstate = error.sqlstate
    response.headers["Neon-Request-Id"] = request_id
    if request.path == "/sql" and request.method == "POST":
        response.headers.setdefault("Poolgate-Cache-Status", "none")
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    _record(request, response.status, started, outcome, sqlstate)
    return response


def _as_gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, web.HTTPNotFound):
        return RouteNotFound("not found: the gateway serves POST /sql")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method {exc.method} is not allowed here")
    log.exception("unhandled error")
    return GatewayError("internal error")


def _answer_error(error: GatewayError) -> web.Response:
    """The one place a failure becomes an HTTP response."""
    return web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        content_type=JSON_TYPE,
        headers=error.headers(),
    )


def answer_unparsable(exc: BaseException | None) -> web.Response:
    """The answer to a request aiohttp could not parse (see `json_server`)."""
    response = _answer_error(BadRequest(f"the request is not valid HTTP/1.1: {parse_failure(exc)}"))
    response.headers["Neon-Request-Id"] = str(uuid.uuid4())
    return response


def _outcome_name(error: GatewayError) -> str:
    name = type(error).__name__
    if type(error) is GatewayError:
        return "internal_error"
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


def _record(
    request: web.Request, status: int, started: float, outcome: str, sqlstate: str | None
) -> None:
    """Metrics (for traffic, not probes of the gateway itself) and the request log line."""
    seconds = time.perf_counter() - started
    if request.path not in _OPERATIONAL_PATHS:
        request.app[METRICS].observe(outcome, seconds, sqlstate)
    log.info(
        json.dumps(
            {
                "event": "request",
                "request_id": request[REQUEST_ID],
                "method": request.method,
                "path": request.path,
                "status": status,
                "outcome": outcome,
                "duration_ms": round(seconds * 1000, 3),
                "rows": request[ROWS],
                "sqlstate": sqlstate,
            }
        )
    )


async def _sql(request: web.Request) -> web.Response:
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={**_CORS_HEADERS, "Allow": "OPTIONS, POST"})
    if request.method != "POST":
        raise _bad_method(request.method)
    require_api_key(request.headers, request.app[SETTINGS].api_keys)
    answer = await request.app[SERVICE].answer(
        request.headers, await _read_body(request), request.remote or "unknown"
    )
    request[ROWS] = answer.outcome.row_count
    headers = {"Poolgate-Cache-Status": answer.cache_status}
    if answer.age is not None:
        headers["Age"] = str(answer.age)
    if answer.invalidation_failed:
        headers["Poolgate-Invalidate-Status"] = "failed"
    return web.Response(body=answer.outcome.body, content_type=JSON_TYPE, headers=headers)


async def _invalidate(request: web.Request) -> web.Response:
    require_api_key(request.headers, request.app[SETTINGS].api_keys)
    dropped = await request.app[SERVICE].invalidate(
        request.headers, await _read_body(request), request.remote or "unknown"
    )
    return web.json_response({"invalidated": dropped})


async def _read_body(request: web.Request) -> bytes:
    """The body, within the size limit and the body deadline: a client that trickles a
    body (a byte every few seconds) is answered 408 instead of holding a connection."""
    settings = request.app[SETTINGS]
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(limit)
    try:
        return await asyncio.wait_for(request.read(), settings.body_timeout)
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(limit) from None
    except TimeoutError:
        raise BodyTimeout(settings.body_timeout) from None


def _bad_method(method: str) -> GatewayError:
    return BadRequest(f"method {method} is not supported on /sql; use POST")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    conninfo = make_conninfo(
        **settings.upstream, connect_timeout=max(2, round(settings.connect_timeout))
    )
    # PQping never authenticates: it only asks whether the server accepts connections.
    status = await asyncio.get_running_loop().run_in_executor(
        None, pq.PGconn.ping, conninfo.encode()
    )
    if status == pq.Ping.OK:
        return web.json_response({"status": "ready"})
    raise Unavailable(f"upstream is not accepting connections ({pq.Ping(status).name})")


async def _metrics(request: web.Request) -> web.Response:
    # it names every tenant (user, database): with API keys on, only key holders see it
    require_api_key(request.headers, request.app[SETTINGS].api_keys)
    cache = request.app[SERVICE].cache
    if cache is not None:
        await cache.refresh_size()  # Redis is asked here, not on every request
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
