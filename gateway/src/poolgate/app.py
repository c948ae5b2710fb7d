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
from collections.abc import Awaitable, Callable
from typing import Any

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
from poolgate.metrics import CONTENT_TYPE, Metrics, merge_expositions
from poolgate.pool import PoolRegistry
from poolgate.request_log import RequestLog
from poolgate.siblings import Siblings
from poolgate.sql_service import SqlService

log = logging.getLogger("poolgate.http")
REQUEST_LOG = RequestLog()

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

Handler = Callable[["Gateway", web.BaseRequest], Awaitable[web.StreamResponse]]


def make_store(settings: Settings) -> CacheStore | None:
    if settings.cache == "off":
        return None
    if settings.cache == "memory":
        return MemoryStore(settings.cache_max_bytes)
    return RedisStore(settings.cache)


class Gateway:
    """The gateway's state and its one request handler, served by aiohttp's low-level
    server (no application router or middleware chain: a dict lookup by path).

    `clock` dates cache entries (tests pass one they control)."""

    def __init__(
        self, settings: Settings, clock: Clock = time.time, siblings: Siblings | None = None
    ) -> None:
        self.settings = settings
        self.pools = PoolRegistry(settings)
        store = make_store(settings)
        cache = QueryCache(store, clock) if store is not None else None
        self.service = SqlService(settings, self.pools, cache)
        self.metrics = Metrics(self.pools, cache)
        self.siblings = siblings
        if siblings is not None:
            self.pools.throttle.share = siblings.login_failed
            if cache is not None and isinstance(store, MemoryStore):
                cache.peers = siblings.invalidate  # Redis is shared: nothing to tell
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start background work; with siblings, answer them (before serving HTTP)."""
        if self.siblings is not None:
            await self.siblings.start(
                {
                    "invalidate": self._invalidate_for_sibling,
                    "login_failed": self._login_failed_at_sibling,
                    "metrics": self._metrics_for_sibling,
                }
            )
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _invalidate_for_sibling(self, message: dict[str, Any]) -> int:
        cache = self.service.cache
        return await cache.invalidate_here(tuple(message["tags"])) if cache is not None else 0

    async def _login_failed_at_sibling(self, message: dict[str, Any]) -> None:
        self.pools.throttle.failed(message["address"], message["user"])

    async def _metrics_for_sibling(self, message: dict[str, Any]) -> str:
        return (await self.own_metrics()).decode()

    async def own_metrics(self) -> bytes:
        """This process's metrics exposition."""
        cache = self.service.cache
        if cache is not None:
            await cache.refresh_size()  # Redis is asked here, not on every request
        return self.metrics.render()

    async def all_metrics(self) -> bytes:
        """The gateway's metrics: this worker's, added up with its siblings'."""
        own = await self.own_metrics()
        if self.siblings is None:
            return own
        try:
            others = await self.siblings.metrics()
        except (OSError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"a sibling worker did not report its metrics: {exc!r}") from None
        return merge_expositions([own.decode(), *others])

    async def _sweep_forever(self) -> None:
        interval = min(30.0, self.settings.idle_timeout / 2)
        cache = self.service.cache
        while True:
            await asyncio.sleep(interval)
            await self.pools.sweep()
            if cache is not None:
                await cache.purge_expired()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        cache = self.service.cache
        if cache is not None:
            await cache.drain()
        if self.siblings is not None:
            await self.siblings.close()
        await self.pools.close()
        if cache is not None:
            await cache.store.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request: route, answer, map failures in one place, log one line."""
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        sqlstate = None
        rows: int | None = None
        try:
            route = _ROUTES.get(request.path)
            if route is None:
                raise RouteNotFound("not found: the gateway serves POST /sql")
            methods, handler = route
            if methods is not None and request.method not in methods:
                raise MethodNotAllowed(f"method {request.method} is not allowed here")
            response = await handler(self, request)
            rows = _rows_of(response)
            outcome = "ok"
        except asyncio.CancelledError:
            self._record(request, request_id, 499, started, "client_closed", None, None)
            raise
        except Exception as exc:
            error = _as_gateway_error(exc)
            response = _answer_error(error)
            outcome = _outcome_name(error)
            sqlstate = error.sqlstate
        headers = response.headers
        headers["Neon-Request-Id"] = request_id
        if request.path == "/sql" and request.method == "POST":
            headers.setdefault("Poolgate-Cache-Status", "none")
        headers.setdefault("Access-Control-Allow-Origin", "*")
        self._record(request, request_id, response.status, started, outcome, sqlstate, rows)
        return response

    def _record(
        self,
        request: web.BaseRequest,
        request_id: str,
        status: int,
        started: float,
        outcome: str,
        sqlstate: str | None,
        rows: int | None,
    ) -> None:
        """Metrics (for traffic, not probes of the gateway itself) and the request log line."""
        seconds = time.perf_counter() - started
        path = request.path
        if path not in _OPERATIONAL_PATHS:
            self.metrics.observe(outcome, seconds, sqlstate)
        REQUEST_LOG.request(
            request_id,
            request.method,
            path,
            status,
            outcome,
            round(seconds * 1000, 3),
            rows,
            sqlstate,
        )


class _RowsResponse(web.Response):
    """A response that knows how many rows it carries (for the request log)."""

    rows: int | None = None


def _rows_of(response: web.StreamResponse) -> int | None:
    return response.rows if isinstance(response, _RowsResponse) else None


def _as_gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
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


async def _sql(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={**_CORS_HEADERS, "Allow": "OPTIONS, POST"})
    if request.method != "POST":
        raise BadRequest(f"method {request.method} is not supported on /sql; use POST")
    require_api_key(request.headers, gateway.settings.api_keys)
    answer = await gateway.service.answer(
        request.headers, await _read_body(gateway.settings, request), request.remote or "unknown"
    )
    headers = {"Poolgate-Cache-Status": answer.cache_status}
    if answer.age is not None:
        headers["Age"] = str(answer.age)
    if answer.invalidation_failed:
        headers["Poolgate-Invalidate-Status"] = "failed"
    response = _RowsResponse(body=answer.outcome.body, content_type=JSON_TYPE, headers=headers)
    response.rows = answer.outcome.row_count
    return response


async def _invalidate(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    require_api_key(request.headers, gateway.settings.api_keys)
    dropped = await gateway.service.invalidate(
        request.headers, await _read_body(gateway.settings, request), request.remote or "unknown"
    )
    return web.json_response({"invalidated": dropped})


async def _read_body(settings: Settings, request: web.BaseRequest) -> bytes:
    """The body, within the size limit and the body deadline: a client that trickles a
    body (a byte every few seconds) is answered 408 instead of holding a connection."""
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(settings.body_timeout) from None
    return b"".join(chunks)


async def _healthz(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _readyz(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    conninfo = make_conninfo(
        **gateway.settings.upstream, connect_timeout=max(2, round(gateway.settings.connect_timeout))
    )
    # PQping never authenticates: it only asks whether the server accepts connections.
    status = await asyncio.get_running_loop().run_in_executor(
        None, pq.PGconn.ping, conninfo.encode()
    )
    if status == pq.Ping.OK:
        return web.json_response({"status": "ready"})
    raise Unavailable(f"upstream is not accepting connections ({pq.Ping(status).name})")


async def _metrics(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    # it names every tenant (user, database): with API keys on, only key holders see it
    require_api_key(request.headers, gateway.settings.api_keys)
    return web.Response(body=await gateway.all_metrics(), headers={"Content-Type": CONTENT_TYPE})


_READS = frozenset({"GET", "HEAD"})
# path -> (methods answered, or None for all: /sql explains what it wants itself; handler)
_ROUTES: dict[str, tuple[frozenset[str] | None, Handler]] = {
    "/sql": (None, _sql),
    "/invalidate": (frozenset({"POST"}), _invalidate),
    "/healthz": (_READS, _healthz),
    "/readyz": (_READS, _readyz),
    "/metrics": (_READS, _metrics),
}
