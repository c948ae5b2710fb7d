"""Everything that touches the Workers runtime: request in, response out, and the
database transport over the runtime's `fetch`.

It imports neither pydantic nor the route handlers, so it loads on its own inside
Pyodide; `entry.py` hands it the application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPMethod
from typing import Any
from urllib.parse import urlsplit

from workers import Request as WorkersRequest
from workers import Response as WorkersResponse
from workers import fetch

from app import Services, database_from_env
from db.client import Database
from db.config import ConfigurationError
from db.transport import HttpCall, HttpReply, TransportFailure
from web import MAX_BODY_BYTES, Request, Response, parse_query

log = logging.getLogger("worker")

ENV_NAMES = (
    "DATABASE_URL",
    "DATABASE_HTTP_ENDPOINT",
    "DATABASE_TIMEOUT_SECONDS",
    "DATABASE_API_KEY",
    "LOCAL_DEVELOPMENT",
)
Handle = Callable[[Request, Services], Awaitable[Response]]


class FetchTransport:
    """The database transport inside Workers: the runtime's own `fetch`, with a timeout."""

    async def __call__(self, call: HttpCall) -> HttpReply:
        try:
            reply = await asyncio.wait_for(self._post(call), call.timeout)
        except TimeoutError:
            raise TransportFailure(f"no answer within {call.timeout:g} s") from None
        except OSError as exc:  # pyodide's fetch raises OSError when no response came
            raise TransportFailure(str(exc)) from None
        return reply

    @staticmethod
    async def _post(call: HttpCall) -> HttpReply:
        response = await fetch(
            call.url, method=HTTPMethod.POST, headers=dict(call.headers), body=call.body.decode()
        )
        body = await response.bytes()
        return HttpReply(response.status, dict(response.headers), body)


async def to_request(request: WorkersRequest) -> Request:
    url = urlsplit(request.url)
    headers = {name.lower(): value for name, value in request.headers.items()}
    declared = headers.get("content-length", "")
    # the length before int(): past 4,300 digits int() raises instead of comparing
    too_large = (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > len(str(MAX_BODY_BYTES)) or int(declared) > MAX_BODY_BYTES)
    )
    # the JS request's own string: the SDK's `method` is an HTTPMethod enum, which raises
    # for methods it does not list (QUERY, PROPFIND...) instead of letting the router 405
    method = str(request.js_object.method).upper()
    body = b""
    if not too_large and method not in ("GET", "HEAD"):
        body = await request.bytes()
        too_large = len(body) > MAX_BODY_BYTES
    return Request(
        method=method,
        path=url.path or "/",
        query=parse_query(url.query),
        query_string=url.query,
        headers=headers,
        body=b"" if too_large else body,
        body_too_large=too_large,
    )


def to_workers_response(response: Response) -> WorkersResponse:
    body = response.body if response.body and response.status not in (204, 304) else None
    return WorkersResponse(body, status=response.status, headers=response.headers)


def env_values(env: Any) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for name in ENV_NAMES:
        value = getattr(env, name, None)
        values[name] = None if value is None else str(value)
    return values


class WorkersAdapter:
    """Serves one application; keeps one Database per isolate (rebuilt if env changes)."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle
        self._transport = FetchTransport()
        self._database: tuple[tuple[str | None, ...], Database | None, ConfigurationError | None]
        self._database = ((), None, None)

    def _database_for(self, env: Any) -> tuple[Database | None, ConfigurationError | None]:
        values = env_values(env)
        key = tuple(values.values())
        if self._database[0] != key:
            self._database = (key, *database_from_env(values, self._transport))
        return self._database[1], self._database[2]

    async def serve(self, request: WorkersRequest | Any, env: Any, ctx: Any) -> WorkersResponse:
        """Answer one request. `request` may be the SDK's Request or the runtime's JS one."""
        if not isinstance(request, WorkersRequest):
            request = WorkersRequest(request)
        database, problem = self._database_for(env)

        def defer(work: Awaitable[Any]) -> None:
            ctx.waitUntil(asyncio.ensure_future(work))

        services = Services(database=database, defer=defer, configuration_error=problem)
        response = await self._handle(await to_request(request), services)
        return to_workers_response(response)
