"""The application: a request goes through the router to a handler, and any failure
through the one error mapper. It knows nothing of the Workers runtime: the adapter
(or the CPython dev server) hands it a `web.Request` and `Services`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cors
from db.client import Database, Result, Statement
from db.config import ConfigurationError, DatabaseConfig
from db.transport import Transport
from errors import (
    AppError,
    BadRequest,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UriTooLong,
    error_response,
)
from idempotency import IdempotencyKey, keyed_write
from request_log import request_log
from router import Match, MatchKind, Router
from web import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    Request,
    Response,
    encode_json,
    header_block_bytes,
    json_response,
    repeated_names,
)

log = logging.getLogger("worker")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NAME = "pooled-worker"
VERSION = "0.1.0"


class NotConfigured(AppError):
    """Raised when a route needs the database but the Worker has no DATABASE_URL."""

    status, code = 500, "not_configured"


@dataclass(slots=True)
class Services:
    """What the runtime provides: the database (or why there is none) and a way to run
    work after the response is sent (`ctx.waitUntil` in Workers)."""

    database: Database | None
    defer: Callable[[Awaitable[Any]], None]
    configuration_error: ConfigurationError | None = None


def database_from_env(
    values: Mapping[str, str | None], transport: Transport
) -> tuple[Database | None, ConfigurationError | None]:
    """The Database the environment describes, or why there is none (answered as a 500
    only by routes that need it, so `/` still works on a misconfigured Worker)."""
    try:
        return Database(DatabaseConfig.from_env(values), transport), None
    except ConfigurationError as exc:
        return None, exc


@dataclass(slots=True)
class Context:
    request: Request
    params: dict[str, Any]
    request_id: str
    services: Services
    app: App
    idempotency: IdempotencyKey | None = None
    replayed: bool = False  # the answer is a keyed write's stored outcome

    @property
    def db(self) -> Database:
        if self.services.database is None:
            raise NotConfigured(str(self.services.configuration_error or "no database"))
        return self.services.database

    async def write(
        self,
        statement: Statement,
        invalidate: tuple[str, ...] = (),
        before: tuple[Statement, ...] = (),
    ) -> Result:
        """A route's one write (with RETURNING): under the request's Idempotency-Key if
        it sent one (see idempotency), else as a plain statement. `before` runs first in
        the same transaction (a row lock the write's condition depends on)."""
        if self.idempotency is None:
            if not before:
                return await self.db.run(statement, invalidate=invalidate)
            results = await self.db.batch([*before, statement], invalidate=invalidate)
            return results[-1]
        result, self.replayed = await keyed_write(
            self.db, self.idempotency, statement, invalidate, before
        )
        return result


Handler = Callable[[Context], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One row of the route table: everything the router and /openapi.json need."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    response: Any = None  # a pydantic model, list[Model], or a dict JSON schema
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()


class App:
    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        self.routes = tuple(routes)
        self.router: Router[RouteSpec] = Router()
        for spec in self.routes:
            self.router.add(spec.method, spec.path, spec)
        self._encoded: dict[str, bytes] = {}

    def encoded_once(self, name: str, build: Callable[[], Any]) -> bytes:
        """JSON that depends on the route table alone (the index, /openapi.json): built
        and encoded at its first request, then served as those bytes (once per isolate)."""
        body = self._encoded.get(name)
        if body is None:
            body = self._encoded[name] = encode_json(build())
        return body

    async def handle(self, request: Request, services: Services) -> Response:
        request_id = request.headers.get("cf-ray") or str(uuid.uuid4())
        started = time.perf_counter()
        try:
            response = await self._dispatch(request, request_id, services)
        except Exception as exc:  # every failure is answered by the one mapper
            response = error_response(exc, request_id, write=request.method in WRITE_METHODS)
        if request.method == "HEAD":
            response.headers["content-length"] = str(len(response.body))
            response.body = b""
        response.headers["x-request-id"] = request_id
        response.headers.update(cors.RESPONSE_HEADERS)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if services.database is not None:
            services.defer(_log_row(services.database, request, response, request_id, duration_ms))
        return response

    async def _dispatch(self, request: Request, request_id: str, services: Services) -> Response:
        if len(request.path) + len(request.query_string) > MAX_URL_BYTES:
            raise UriTooLong(f"the path and query must be at most {MAX_URL_BYTES} bytes")
        if header_block_bytes(request.headers.items()) > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"the headers must be at most {MAX_HEADER_BYTES} bytes")
        match: Match[RouteSpec] = self.router.match(request.method, request.path)
        if match.kind is MatchKind.PARTIAL:
            allowed = tuple(sorted({*match.allowed, "OPTIONS"}))
            if request.method == "OPTIONS":
                return Response(204, b"", cors.options_headers(allowed, request.headers))
            raise MethodNotAllowed(allowed)
        if match.kind is MatchKind.NONE or match.route is None:
            canonical = self.router.canonical_path(request.path)
            if canonical is not None:
                return _redirect(canonical, request)
            raise NotFound(f"no route for {request.method} {request.path}")
        if request.body_too_large or len(request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body must be at most {MAX_BODY_BYTES} bytes")
        _refuse_repeated_parameters(match.route.handler, request)
        context = Context(request, match.params, request_id, services, self)
        if request.method in WRITE_METHODS:
            context.idempotency = IdempotencyKey.of(request)
        try:
            response = await match.route.handler.handler(context)
        except Exception as exc:
            if not context.replayed:
                raise
            response = error_response(exc, request_id, write=True)  # a replayed 404, say
        if context.replayed:
            response.headers["idempotent-replayed"] = "true"
        return response


def _refuse_repeated_parameters(spec: RouteSpec, request: Request) -> None:
    """Every query parameter a route takes holds one value: given twice, which one
    counts would depend on the host's parser, so neither does (400)."""
    repeated = sorted(repeated_names(request.query_string) & {q.name for q in spec.query})
    if repeated:
        given = ", ".join(f"?{name}=" for name in repeated)
        raise BadRequest(f"{given} given more than once; give each parameter once")


def _redirect(path: str, request: Request) -> Response:
    location = path + (f"?{request.query_string}" if request.query_string else "")
    return json_response({"redirect": location}, status=308, headers={"location": location})


def _log_row(
    database: Database, request: Request, response: Response, request_id: str, duration_ms: float
) -> Awaitable[None]:
    """The request's row in the request log, as work to run after the answer (batched;
    it never raises)."""
    level = "error" if response.status >= 500 else "warning" if response.status >= 400 else "info"
    meta = {
        "method": request.method,
        "path": request.path,
        "status": response.status,
        "duration_ms": duration_ms,
        "request_id": request_id,
    }
    message = f"{request.method} {request.path} {response.status}"
    return request_log(database).add(level, message, meta)
