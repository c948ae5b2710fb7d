"""Accelerate's routes, as Prisma 7's client and `withAccelerate()` call them:

    GET  /connection-info                         what the client compiles plans for
    POST /query                                   a plan, run (cached if asked)
    POST /transaction/start                       an interactive transaction (or a batch)
    POST /transaction/<id>/query|commit|rollback
    POST /invalidate                              {"tags": [...]} or {"tags": "all"}

Every call needs `Authorization: Bearer <key>` with a key of `--accelerate-keys-file`
(checked before the body is read; a wrong key counts against the caller's address in the
login throttle, a right one never waits on it), and a supported client version. The
plan runs in the companion (Prisma's interpreter, over poolgate's pool); this face adds
the key, the bounds, the cache in front of reads, and the invalidation after writes.
Failures become Prisma-shaped answers (`{code, error, meta}`) in exactly one place,
`_answer_error`; the companion's own answers (P2002, P2028, ...) are relayed unchanged.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from poolgate.config import Settings
from poolgate.core.api_keys import bearer_token
from poolgate.core.cache import QueryCache
from poolgate.core.cache_policy import CachePolicy, scoped_tags
from poolgate.core.cache_stores import CacheUnavailable
from poolgate.core.errors import (
    BodyTimeout,
    GatewayError,
    InvalidText,
    MethodNotAllowed,
    OutcomeUnknown,
    RequestTooLarge,
    ResponseTooLarge,
    RouteNotFound,
    TooManyLogins,
    TransactionExpired,
    Unauthorized,
    Unavailable,
)
from poolgate.core.execute import Outcome
from poolgate.core.throttle import LoginThrottle
from poolgate.faces.accelerate import protocol
from poolgate.faces.accelerate.keys import AccelerateKeys, Tenant
from poolgate.faces.accelerate.protocol import InvalidRequest, UnsupportedClient

ACCELERATE_PATHS = frozenset({"/connection-info", "/query", "/transaction/start", "/invalidate"})
THROTTLE_USER = "\x00accelerate-key"  # the throttle's per-user count, for every wrong key
ALL_TAG = "@all"  # every cached Accelerate read of a tenant carries it (invalidateAll)
MODELS_TAG = "@models"  # every cached read keyed to tables carries it (writes not read off)
JSON_TYPE = "application/json"
log = logging.getLogger("poolgate.accelerate")
_CALLS = ("query", "commit", "rollback")  # POST /transaction/<id>/<call>
_RELAYED_HEADERS = ("prisma-transaction-id", "poolgate-written", "retry-after")

BodyReader = Callable[[], Awaitable[bytes]]
# the request, its body (read already), and the holder: (replica, worker)
Forward = Callable[[web.BaseRequest, bytes, str, int], Awaitable[web.Response]]


class CompanionAnswer(Exception):
    """The companion's answer to a call that did not succeed: relayed as it is."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


def claims(request: web.BaseRequest, accelerate_on: bool) -> bool:
    """Whether a request is Accelerate's: its own routes, and the ones it shares with
    poolgate's transactions and /invalidate when no Neon-Connection-String is sent (every
    call of poolgate's own protocol carries one; Prisma's client never does)."""
    if not accelerate_on:
        return False
    path = request.path
    if path in ("/connection-info", "/query", "/transaction/start"):
        return True
    if path != "/invalidate" and not path.startswith("/transaction/"):
        return False
    return "Neon-Connection-String" not in request.headers


class AccelerateFace:
    def __init__(
        self,
        settings: Settings,
        keys: AccelerateKeys,
        companion: Path,
        cache: QueryCache | None,
        throttle: LoginThrottle,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._companion_path = companion
        self._cache = cache
        self._throttle = throttle
        self._session: aiohttp.ClientSession | None = None
        # with --advertise-url (see serving): this replica's name and worker, in every
        # transaction id it hands out, and how a call is sent to the replica holding one
        self.replica: tuple[str, int] | None = None
        self.forward: Forward | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def answer(
        self, request: web.BaseRequest, read_body: BodyReader, deadline: float
    ) -> web.Response:
        """Every Accelerate request; failures answered here, Prisma-shaped."""
        try:
            return await self._route(request, read_body, deadline)
        except CompanionAnswer as answer:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        except Exception as exc:
            return _answer_error(exc)

    async def _route(
        self, request: web.BaseRequest, read_body: BodyReader, deadline: float
    ) -> web.Response:
        path, method = request.path, request.method
        parts = path.split("/")
        is_call = len(parts) == 4 and parts[1] == "transaction" and parts[2] != "start"
        known = path in ACCELERATE_PATHS or (is_call and parts[3] in _CALLS)
        if not known:
            raise RouteNotFound("not found: this is Prisma Accelerate's endpoint")
        wanted = "GET" if path == "/connection-info" else "POST"
        if method != wanted:
            raise MethodNotAllowed(f"method {method} is not allowed here; use {wanted}")
        tenant = await self._tenant(request)
        if path == "/invalidate":  # the extension sends no client version here
            return await self._invalidate(tenant, await read_body())
        protocol.check_client_version(request.headers)
        if path == "/connection-info":
            return await self._call(tenant, "info", b"", {}, deadline, retry_safe=True)
        body = await read_body()
        if path == "/transaction/start":
            return await self._start(request, tenant, body, deadline)
        transaction_id = None
        if is_call:
            transaction_id = self._own(parts[2]).companion
            if parts[3] != "query":  # commit, rollback: no body to speak of
                return await self._finish(tenant, parts[3], transaction_id, deadline)
        payload = protocol.json_body(body)
        return await self._query(request.headers, tenant, transaction_id, body, payload, deadline)

    def _own(self, text: str) -> protocol.TransactionId:
        """A transaction id this replica holds (the replicas' front forwards the others)."""
        parsed = protocol.transaction_id(text)
        if parsed is None:
            raise RouteNotFound("not found: no such transaction id")
        if parsed.replica is not None and (
            self.replica is None or parsed.replica != self.replica[0]
        ):
            raise TransactionExpired()  # a replica that is gone, or one this one is not
        return parsed

    async def _start(
        self, request: web.BaseRequest, tenant: Tenant, body: bytes, deadline: float
    ) -> web.Response:
        """A transaction, or (`newTxId`) a savepoint in one, which only its holder has."""
        payload = protocol.json_body(body) if body.strip() else {}
        protocol.transaction_options(payload)
        if isinstance(payload.get("newTxId"), str):
            outer = protocol.transaction_id(payload["newTxId"])
            assert outer is not None  # checked by transaction_options
            mine = self.replica is not None and outer.replica == self.replica[0]
            if outer.replica is not None and not mine:
                if self.forward is None:
                    raise TransactionExpired()
                return await self.forward(request, body, outer.replica, outer.worker)
            body = json.dumps({**payload, "newTxId": outer.companion}).encode()
        started = await self._call(tenant, "start", body, {}, deadline, retry_safe=True)
        if self.replica is None:
            return started
        named = str(protocol.TransactionId(json.loads(started.body)["id"], *self.replica))  # type: ignore[arg-type]
        return web.json_response({"id": named}, headers={"Prisma-Transaction-Id": named})

    async def _tenant(self, request: web.BaseRequest) -> Tenant:
        """The key's tenant; a wrong key is counted against the caller's address."""
        tenant = self._keys.tenant(bearer_token(request.headers))
        if tenant is not None:
            return tenant
        address = request.remote or "unknown"
        self._throttle.check(address, THROTTLE_USER)
        await self._throttle.record_failure(address, THROTTLE_USER)
        raise Unauthorized()

    async def _query(
        self,
        headers: Mapping[str, str],
        tenant: Tenant,
        transaction_id: str | None,
        body: bytes,
        payload: dict[str, Any],
        deadline: float,
    ) -> web.Response:
        plan = protocol.query_plan(payload)
        touched = protocol.tables_touched(plan)
        if transaction_id is not None:
            # the companion keeps what the transaction wrote, and names it on commit
            extra = {"poolgate-transaction": transaction_id}
            if touched.writes and tenant.model_invalidation:
                extra["poolgate-writes"] = ",".join(_write_tags(touched))
            return await self._call(tenant, "query", body, extra, deadline, retry_safe=False)
        wants = protocol.cache_request(headers)
        if wants.wanted and not touched.writes and self._cache is not None:
            return await self._cached(tenant, plan, touched, wants, body, deadline)
        if not (touched.writes and tenant.model_invalidation):
            response = await self._call(
                tenant, "query", body, {}, deadline, retry_safe=not touched.writes
            )
            response.headers["accelerate-cache-status"] = "none"
            return response
        try:
            response = await self._call(tenant, "query", body, {}, deadline, retry_safe=False)
        except (CompanionAnswer, OutcomeUnknown, Unavailable):
            # refused, or cut off: whether it wrote is not certain, so its tables' reads
            # go anyway (a plan's writes are one transaction: all of them or none)
            await self._drop(tenant, _write_tags(touched), None)
            raise
        await self._drop(tenant, _write_tags(touched), response)
        response.headers["accelerate-cache-status"] = "none"
        return response

    async def _cached(
        self,
        tenant: Tenant,
        plan: protocol.QueryPlan,
        touched: protocol.TablesTouched,
        wants: protocol.CacheRequest,
        body: bytes,
        deadline: float,
    ) -> web.Response:
        cache = self._cache
        assert cache is not None
        model_tags = (MODELS_TAG, *(_table_tag(t) for t in sorted(touched.read)))
        tags = (ALL_TAG, *wants.tags, *(model_tags if tenant.model_invalidation else ()))
        material = json.dumps([tenant.user, tenant.database, sorted(wants.tags), plan.canonical()])
        key = "accelerate:" + hashlib.sha256(material.encode()).hexdigest()

        async def upstream() -> Outcome:
            response = await self._call(tenant, "query", body, {}, deadline, retry_safe=True)
            return Outcome(response.body, 0)  # type: ignore[arg-type]

        answer = await cache.answer(
            key,
            CachePolicy(ttl=wants.ttl, swr=wants.swr, tags=wants.tags),
            _scoped(tenant, tags),
            upstream,
        )
        age = answer.age or 0
        produced = time.time() - age
        return web.Response(
            body=answer.outcome.body,
            content_type=JSON_TYPE,
            headers={
                "accelerate-cache-status": answer.status,
                "last-modified": email.utils.formatdate(produced, usegmt=True),
                "age": str(age),
            },
        )

    async def _finish(
        self, tenant: Tenant, action: str, transaction_id: str, deadline: float
    ) -> web.Response:
        extra = {"poolgate-transaction": transaction_id}
        try:
            response = await self._call(tenant, action, b"", extra, deadline, retry_safe=False)
        except (OutcomeUnknown, Unavailable):
            # a commit whose outcome is unknown: what it wrote is the companion's to say,
            # and it did not, so every table-keyed read of the tenant goes
            if action == "commit" and tenant.model_invalidation:
                await self._drop(tenant, (MODELS_TAG,), None)
            raise
        written = response.headers.pop("poolgate-written", "")
        if written and tenant.model_invalidation:
            await self._drop(tenant, tuple(written.split(",")), response)
        return response

    async def _drop(
        self, tenant: Tenant, tags: tuple[str, ...], response: web.Response | None
    ) -> None:
        """After a write committed: its tables' cached reads, before the client hears of
        it. A store that cannot be reached is reported, never an error (the write stands)."""
        if self._cache is None:
            return
        try:
            await self._cache.invalidate(_scoped(tenant, tags))
        except CacheUnavailable:
            if response is not None:
                response.headers["poolgate-invalidate-status"] = "failed"

    async def _invalidate(self, tenant: Tenant, body: bytes) -> web.Response:
        tags = protocol.invalidation_tags(protocol.json_body(body))
        if self._cache is not None:
            try:
                await self._cache.invalidate(_scoped(tenant, (ALL_TAG,) if tags is None else tags))
            except CacheUnavailable:
                raise Unavailable("the cache store is unreachable: nothing was dropped") from None
        return web.json_response({})

    async def _call(
        self,
        tenant: Tenant,
        op: str,
        body: bytes,
        extra: dict[str, str],
        deadline: float,
        *,
        retry_safe: bool,
    ) -> web.Response:
        """One call to the companion, answered by `deadline`; a 2xx answer, or its answer
        raised as CompanionAnswer. A companion that cannot be reached is 503 (try again);
        one that goes away during a call that may write (`retry_safe` false) is 504:
        whether the write happened is unknown, and a retry could make it twice."""
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        headers = {
            "poolgate-op": op,
            "poolgate-database": tenant.connection_string(),
            "poolgate-timeout-ms": str(max(1, round((left - 0.1) * 1000))),
            "content-type": JSON_TYPE,
            **extra,
        }
        try:
            async with asyncio.timeout_at(deadline):
                async with self._client().post(
                    "http://companion/", data=body, headers=headers
                ) as reply:
                    answer = await _body_within(reply, self._settings.max_response_bytes)
                    kept = {
                        name: value
                        for name, value in reply.headers.items()
                        if name.lower() in _RELAYED_HEADERS
                    }
                    if reply.status >= 300:
                        kept["content-type"] = JSON_TYPE
                        raise CompanionAnswer(reply.status, answer, kept)
                    return web.Response(body=answer, content_type=JSON_TYPE, headers=kept)
        except TimeoutError:
            raise OutcomeUnknown(
                f"the query did not finish within {self._settings.request_deadline:g} s:"
                " whether it took effect is unknown"
            ) from None
        except aiohttp.ClientConnectorError as exc:  # never reached: nothing was done
            raise Unavailable(f"the Accelerate companion cannot be reached: {exc}") from None
        except aiohttp.ClientError as exc:
            if retry_safe:
                raise Unavailable(f"the Accelerate companion went away: {exc}") from None
            raise OutcomeUnknown(
                "the Accelerate companion went away during the call: whether it took effect"
                " is unknown"
            ) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # a connection per call: one kept across a companion restart would fail
                # as if the companion had died during the call
                connector=aiohttp.UnixConnector(
                    path=str(self._companion_path), limit=256, force_close=True
                ),
                auto_decompress=False,
            )
        return self._session


async def _body_within(reply: aiohttp.ClientResponse, limit: int) -> bytes:
    """The companion's whole answer, or ResponseTooLarge past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in reply.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _table_tag(table: str) -> str:
    return f"@table:{table}"


def _write_tags(touched: protocol.TablesTouched) -> tuple[str, ...]:
    named = tuple(_table_tag(t) for t in sorted(touched.written))
    return (MODELS_TAG, *named) if touched.unnamed_write else named


def _scoped(tenant: Tenant, tags: tuple[str, ...]) -> tuple[str, ...]:
    return scoped_tags(tenant.user, tenant.database, tags)


# core error -> (Accelerate's code); the status is the error's own
_CODES: dict[type[GatewayError], str] = {
    Unauthorized: "P6002",
    InvalidText: "P6005",  # a lone surrogate: 22021's message, Accelerate's code
    TooManyLogins: "P5011",
    RequestTooLarge: "P6005",
    BodyTimeout: "P6005",
    MethodNotAllowed: "P6005",
    RouteNotFound: "P6000",
    ResponseTooLarge: "P6009",
    Unavailable: "P6008",
    OutcomeUnknown: "P6004",
    TransactionExpired: "P2028",  # its replica is gone: rolled back with its connection
}


def _answer_error(exc: Exception) -> web.Response:
    """The one place a failure of this face becomes an answer: `{code, error, meta}`, as
    Prisma's client reads it (PrismaClientKnownRequestError with that code)."""
    if not isinstance(exc, GatewayError):
        log.exception("unhandled error")
        exc = GatewayError("internal error")
    if isinstance(exc, InvalidRequest | UnsupportedClient):
        code = exc.code
    else:
        code = next((c for t, c in _CODES.items() if isinstance(exc, t)), "P6000")
    message = exc.message
    if isinstance(exc, Unauthorized):
        message = "the API key is not valid for this endpoint"
    body = {"code": code, "error": message, "meta": {}}
    headers = {**exc.headers(), "Prisma-Error-Code": code}
    headers.pop("WWW-Authenticate", None)  # poolgate's realm: not Accelerate's to name
    return web.Response(
        status=exc.status, body=json.dumps(body).encode(), content_type=JSON_TYPE, headers=headers
    )
