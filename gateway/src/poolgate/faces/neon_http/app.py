"""The HTTP face of the gateway: `/sql` (Neon's protocol), health, readiness, metrics.

Errors become responses in exactly one place, `answer_error`; every response carries a
`Neon-Request-Id`, and every request produces one structured log line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from poolgate.config import Settings
from poolgate.core import wire
from poolgate.core.api_keys import require_api_key
from poolgate.core.cache import Clock, QueryCache
from poolgate.core.cache_stores import CacheStore, MemoryStore, RedisStore, version_window
from poolgate.core.errors import (
    BadRequest,
    BodyTimeout,
    ExpectationFailed,
    GatewayError,
    MethodNotAllowed,
    NoSuchTransaction,
    OutcomeUnknown,
    RequestTooLarge,
    RouteNotFound,
    Unavailable,
)
from poolgate.core.metrics import CONTENT_TYPE, Metrics, merge_expositions
from poolgate.core.pool import PoolRegistry
from poolgate.core.request_log import RequestLog
from poolgate.core.requests import is_ascii_number
from poolgate.core.transactions import Transactions
from poolgate.faces.accelerate import face as accelerate
from poolgate.faces.accelerate.companion_process import companion_socket
from poolgate.faces.neon_http.json_server import parse_failure
from poolgate.faces.neon_http.protocol import TRANSACTION_HEADER
from poolgate.faces.neon_http.sql_service import SqlAnswer, SqlService
from poolgate.faces.neon_ws.session import Session, SessionCollector, Sessions
from poolgate.faces.neon_ws.upgrade import is_session_request, require_session_key
from poolgate.siblings import Siblings

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
        "Poolgate-Invalidate-Tags, Poolgate-Transaction"
    ),
    "Access-Control-Expose-Headers": (
        "Neon-Request-Id, Poolgate-Cache-Status, Poolgate-Invalidate-Status, Age"
    ),
    "Access-Control-Max-Age": "86400",
}

_OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# (gateway, request, deadline: event-loop time by which it must be answered)
Handler = Callable[["Gateway", web.BaseRequest, float], Awaitable[web.StreamResponse]]


def make_store(settings: Settings) -> CacheStore | None:
    if settings.cache == "off":
        return None
    if settings.cache == "memory":
        return MemoryStore(
            settings.cache_max_bytes, version_seconds=version_window(settings.request_deadline)
        )
    return RedisStore(settings.cache, version_seconds=version_window(settings.request_deadline))


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
        index = siblings.index if siblings is not None else 0
        self.metrics = Metrics(self.pools, cache)
        transactions = Transactions(
            settings, self.pools, id_prefix=f"{index}.", on_end=self.metrics.transaction_ended
        )
        self.metrics.watch_transactions(transactions)
        self.service = SqlService(
            settings,
            self.pools,
            cache,
            transactions,
            in_process_cache=isinstance(store, MemoryStore),
        )
        self.sessions = Sessions(self.pools, settings)  # Neon's WebSocket face
        self.draining = False  # SIGTERM came: see serving.serve
        self.sessions.on_end = self._session_ended
        self.metrics.registry.register(SessionCollector(self.sessions.stats))
        self.siblings = siblings
        # Prisma Accelerate's face: its companion is the supervisor's (there is one, with
        # --accelerate-keys-file, whatever --workers says)
        self.accelerate: accelerate.AccelerateFace | None = None
        if settings.accelerate_keys is not None and siblings is not None:
            self.accelerate = accelerate.AccelerateFace(
                settings,
                settings.accelerate_keys,
                companion_socket(siblings.directory),
                cache,
                self.pools.throttle,
            )
        if siblings is not None:
            self.pools.throttle.share = siblings.login_failed
            self.pools.throttle.share_success = siblings.login_succeeded
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
                    "login_succeeded": self._login_succeeded_at_sibling,
                    "metrics": self._metrics_for_sibling,
                    "call": self._call_for_sibling,
                }
            )
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _invalidate_for_sibling(self, message: dict[str, Any]) -> int:
        cache = self.service.cache
        return await cache.invalidate_here(tuple(message["tags"])) if cache is not None else 0

    async def _login_failed_at_sibling(self, message: dict[str, Any]) -> None:
        self.pools.throttle.failed(message["address"], message["user"])

    async def _login_succeeded_at_sibling(self, message: dict[str, Any]) -> None:
        self.pools.throttle.succeeded(message["user"], message["database"], message["password"])

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
        await self.sessions.close()
        if self.accelerate is not None:
            await self.accelerate.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        cache = self.service.cache
        if cache is not None:
            await cache.drain()
        if self.siblings is not None:
            await self.siblings.close()
        await self.service.transactions.close()
        await self.pools.close()
        REQUEST_LOG.flush()
        if cache is not None:
            await cache.store.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request: route, answer, map failures in one place, log one line."""
        request_id = new_request_id()
        started = time.perf_counter()
        if is_session_request(request, _HTTP_PATHS):
            try:
                require_session_key(request, self.settings.api_keys)
            except GatewayError as refused:
                refusal = answer_error(refused)
                self._record(
                    request, request_id, refusal.status, started, "unauthorized", None, None
                )
                return refusal
            return await self.sessions.serve(request)
        deadline = asyncio.get_running_loop().time() + self.settings.request_deadline
        sqlstate = None
        rows: int | None = None
        try:
            if accelerate.claims(request, self.accelerate is not None):
                assert self.accelerate is not None
                answered = await self.accelerate.answer(
                    request, lambda: _read_body(self.settings, request, deadline), deadline
                )
                outcome = "ok" if answered.status < 400 else "accelerate_error"
                self._record(request, request_id, answered.status, started, outcome, None, None)
                answered.headers["Neon-Request-Id"] = request_id
                return answered
            if _is_transaction_call(request):
                response = await self._transaction_call(request, deadline)
            else:
                route = _ROUTES.get(request.path)
                if route is None:
                    raise RouteNotFound("not found: the gateway serves POST /sql")
                methods, handler = route
                if methods is not None and request.method not in methods:
                    raise MethodNotAllowed(f"method {request.method} is not allowed here")
                response = await handler(self, request, deadline)
            rows = _rows_of(response)
            outcome = "ok"
            if isinstance(response, _Relayed):  # answered by the sibling that owns it
                outcome, sqlstate = response.outcome, response.sqlstate
        except asyncio.CancelledError:
            self._record(request, request_id, 499, started, "client_closed", None, None)
            raise
        except Exception as exc:
            response, outcome, sqlstate = _failure(exc)
        headers = response.headers
        headers["Neon-Request-Id"] = request_id
        if request.path == "/sql" and request.method == "POST":
            headers.setdefault("Poolgate-Cache-Status", "none")
        headers.setdefault("Access-Control-Allow-Origin", "*")
        self._record(request, request_id, response.status, started, outcome, sqlstate, rows)
        return response

    async def serve_companion(self, request: web.BaseRequest) -> web.StreamResponse:
        """The private socket of the Accelerate companion (mode 0700 directory): WebSocket
        sessions only, with no API key asked (the companion has checked the caller's
        Accelerate key), served while draining too (it is this worker's own traffic)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return answer_error(RouteNotFound("not found: WebSocket sessions only"))
        return await self.sessions.serve(request, while_draining=True)

    def _session_ended(self, session: Session, seconds: float) -> None:
        REQUEST_LOG.session(session.user, session.database, session.outcome, seconds * 1000)

    async def _transaction_call(
        self, request: web.BaseRequest, deadline: float
    ) -> web.StreamResponse:
        """`POST /transaction[/<id>/commit|rollback]` and `/sql` inside a transaction:
        answered here, or by the sibling worker that holds the transaction (by the same
        deadline: it is told how much of it is left)."""
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={**_CORS_HEADERS, "Allow": "OPTIONS, POST"})
        if request.method != "POST":
            raise MethodNotAllowed(f"method {request.method} is not allowed here; use POST")
        require_api_key(request.headers, self.settings.api_keys)
        if self.draining and request.path == TRANSACTION_PATH:
            raise Unavailable(
                "the gateway is stopping (draining): open the transaction on another replica"
            )
        call = Call(
            request.path,
            request.headers,
            await _read_body(self.settings, request, deadline),
            request.remote or "unknown",
            deadline,
        )
        owner = call.owner()
        if self.siblings is None or owner is None or owner == self.siblings.index:
            return await self.answer_call(call)
        left = deadline - asyncio.get_running_loop().time()
        try:
            reply = await self.siblings.forward(owner, {"op": "call", **call.message()}, left)
        except TimeoutError:
            raise OutcomeUnknown(
                "the worker holding the transaction did not answer in time: whether the call"
                " took effect is unknown"
            ) from None
        except (OSError, ValueError):
            # the worker that held it is gone (and its connection with it: rolled back)
            raise NoSuchTransaction() from None
        return _Relayed.of(reply)

    async def answer_call(self, call: Call) -> web.Response:
        """A transaction call, answered by this worker (it holds the transaction)."""
        service = self.service
        if call.path == "/sql":
            answer = await service.answer(call.headers, call.body, call.client, call.deadline)
            return _sql_response(answer)
        if call.path == TRANSACTION_PATH:
            opened = await service.begin(call.headers, call.body, call.client, call.deadline)
            return web.json_response(opened, status=201)
        transaction_id, action = call.target()
        if action == "commit":
            dropped = await service.commit(transaction_id, call.headers, call.deadline)
            headers = {} if dropped else {"Poolgate-Invalidate-Status": "failed"}
            return web.json_response({"committed": True}, headers=headers)
        await service.rollback(transaction_id, call.headers, call.deadline)
        return web.json_response({"rolled_back": True})

    async def _call_for_sibling(self, message: dict[str, Any]) -> dict[str, Any]:
        """A call another worker forwarded: answered, failures mapped, as its own would be."""
        outcome, sqlstate = "ok", None
        try:
            response: web.Response = await self.answer_call(Call.from_message(message))
        except Exception as exc:
            response, outcome, sqlstate = _failure(exc)
        return _Relayed.message(response, outcome, sqlstate)

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


TRANSACTION_PATH = "/transaction"
FORWARDING_MARGIN = 0.05  # seconds of a forwarded call's deadline left for the way back


def _is_transaction_call(request: web.BaseRequest) -> bool:
    path = request.path
    if path == "/sql":  # other methods are /sql's to answer (PROTOCOL.md: 400)
        return request.method == "POST" and TRANSACTION_HEADER in request.headers
    return path == TRANSACTION_PATH or path.startswith(TRANSACTION_PATH + "/")


@dataclass(frozen=True, slots=True)
class Call:
    """A transaction call, as this worker or a sibling answers it."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    client: str
    deadline: float  # event-loop time by which it is answered

    def transaction_id(self) -> str | None:
        if self.path == "/sql":
            return self.headers.get(TRANSACTION_HEADER)
        if self.path == TRANSACTION_PATH:
            return None
        return self.path.split("/")[2]

    def owner(self) -> int | None:
        """The index of the worker holding the transaction (the id's first part)."""
        prefix, dot, _ = (self.transaction_id() or "").partition(".")
        return int(prefix) if dot and is_ascii_number(prefix) and len(prefix) < 4 else None

    def target(self) -> tuple[str, str]:
        """(id, "commit" | "rollback") of `/transaction/<id>/<action>`."""
        parts = self.path.split("/")
        if len(parts) != 4 or parts[3] not in ("commit", "rollback") or not parts[2]:
            raise RouteNotFound(
                "not found: POST /transaction/<id>/commit or /transaction/<id>/rollback"
            )
        return parts[2], parts[3]

    def message(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "headers": list(self.headers.items()),
            "body": base64.b64encode(self.body).decode(),
            "client": self.client,
            "seconds_left": self.deadline - asyncio.get_running_loop().time(),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Call:
        # a little earlier than the forwarding worker's, so the answer gets back in time
        left = float(message["seconds_left"]) - FORWARDING_MARGIN
        return cls(
            message["path"],
            CIMultiDict(message["headers"]),
            base64.b64decode(message["body"]),
            message["client"],
            asyncio.get_running_loop().time() + left,
        )


class _Relayed(web.Response):
    """A sibling worker's answer, with what its log line and metrics need."""

    outcome: str = "ok"
    sqlstate: str | None = None
    rows: int | None = None

    @staticmethod
    def message(response: web.Response, outcome: str, sqlstate: str | None) -> dict[str, Any]:
        return {
            "status": response.status,
            "headers": [(k, v) for k, v in response.headers.items() if k != "Content-Length"],
            "body": base64.b64encode(response.body or b"").decode(),  # type: ignore[arg-type]
            "outcome": outcome,
            "sqlstate": sqlstate,
            "rows": _rows_of(response),
        }

    @classmethod
    def of(cls, reply: dict[str, Any]) -> _Relayed:
        relayed = cls(
            status=reply["status"],
            body=base64.b64decode(reply["body"]),
            headers=CIMultiDict(reply["headers"]),
        )
        relayed.outcome, relayed.sqlstate, relayed.rows = (
            reply["outcome"],
            reply["sqlstate"],
            reply["rows"],
        )
        return relayed


class _RowsResponse(web.Response):
    """A response that knows how many rows it carries (for the request log)."""

    rows: int | None = None


def _rows_of(response: web.StreamResponse) -> int | None:
    return response.rows if isinstance(response, _RowsResponse | _Relayed) else None


def _as_gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.exception("unhandled error")
    return GatewayError("internal error")


def _failure(exc: Exception) -> tuple[web.Response, str, str | None]:
    """A failure's answer, outcome name (metrics, log) and SQLSTATE."""
    error = _as_gateway_error(exc)
    return answer_error(error), outcome_name(error), error.sqlstate


def answer_error(error: GatewayError) -> web.Response:
    """The one place a failure becomes an HTTP response."""
    return web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        content_type=JSON_TYPE,
        headers=error.headers(),
    )


def new_request_id() -> str:
    """A random (version 4) UUID in its text form, as `str(uuid.uuid4())` gives, without
    building a `UUID` object per request (a third of the cost)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def answer_unparsable(exc: BaseException | None) -> web.Response:
    """The answer to a request aiohttp could not parse (see `json_server`)."""
    response = answer_error(BadRequest(f"the request is not valid HTTP/1.1: {parse_failure(exc)}"))
    response.headers["Neon-Request-Id"] = new_request_id()
    return response


def outcome_name(error: GatewayError) -> str:
    name = type(error).__name__
    if type(error) is GatewayError:
        return "internal_error"
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


async def _sql(gateway: Gateway, request: web.BaseRequest, deadline: float) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={**_CORS_HEADERS, "Allow": "OPTIONS, POST"})
    if request.method != "POST":
        raise BadRequest(f"method {request.method} is not supported on /sql; use POST")
    require_api_key(request.headers, gateway.settings.api_keys)
    body = await _read_body(gateway.settings, request, deadline)
    answer = await gateway.service.answer(
        request.headers, body, request.remote or "unknown", deadline
    )
    return _sql_response(answer)


def _sql_response(answer: SqlAnswer) -> web.Response:
    """A `/sql` answer, in a transaction or not: rows, how the cache served them."""
    headers = {"Poolgate-Cache-Status": answer.cache_status}
    if answer.age is not None:
        headers["Age"] = str(answer.age)
    if answer.invalidation_failed:
        headers["Poolgate-Invalidate-Status"] = "failed"
    response = _RowsResponse(body=answer.outcome.body, content_type=JSON_TYPE, headers=headers)
    response.rows = answer.outcome.row_count
    return response


async def _invalidate(
    gateway: Gateway, request: web.BaseRequest, deadline: float
) -> web.StreamResponse:
    require_api_key(request.headers, gateway.settings.api_keys)
    body = await _read_body(gateway.settings, request, deadline)
    dropped = await gateway.service.invalidate(
        request.headers, body, request.remote or "unknown", deadline
    )
    return web.json_response({"invalidated": dropped})


async def _read_body(settings: Settings, request: web.BaseRequest, deadline: float) -> bytes:
    """The body, within the size limit and the body deadline (--body-timeout, and never
    past the request's own): a client that trickles a body (a byte every few seconds) is
    answered 408 instead of holding a connection."""
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(limit)
    await continue_if_expected(request)
    if request.content.is_eof():  # all there already: small bodies come with the head
        body = request.content.read_nowait()  # (no loop turn to see the end of it)
        if len(body) > limit:  # chunked, so no Content-Length to check first
            raise RequestTooLarge(limit)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(min(deadline, loop.time() + settings.body_timeout)):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(settings.body_timeout) from None
    return b"".join(chunks)


async def continue_if_expected(request: web.BaseRequest) -> None:
    """`Expect: 100-continue`: the request was found acceptable (route, method, API key,
    size) when its body is asked for, so the client is told to send it. A request refused
    before that gets its final answer instead, its body never read."""
    expect = request.headers.get("Expect")
    if expect is None or request.version < (1, 1):
        return
    if expect.lower() != "100-continue":
        raise ExpectationFailed()
    if not request.content.is_eof():
        writer = request.writer
        await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.output_size = 0  # the response proper has not started


async def _healthz(gateway: Gateway, request: web.BaseRequest, _: float) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _readyz(gateway: Gateway, request: web.BaseRequest, _: float) -> web.StreamResponse:
    if gateway.draining:  # a load balancer's health check: move the traffic elsewhere
        raise Unavailable("the gateway is stopping (draining): use another replica")
    # like libpq's PQping, it never logs in: it only asks whether the server takes
    # connections
    try:
        async with asyncio.timeout(max(2.0, gateway.settings.connect_timeout)):
            status = await wire.ping(wire.Target.of(gateway.settings.upstream))
    except TimeoutError:
        status = "no_response"
    if status == "ok":
        return web.json_response({"status": "ready"})
    raise Unavailable(f"upstream is not accepting connections ({status.upper()})")


async def _metrics(gateway: Gateway, request: web.BaseRequest, _: float) -> web.StreamResponse:
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
_HTTP_PATHS = frozenset(_ROUTES)  # a WebSocket upgrade on any other path is a session
