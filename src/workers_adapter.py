"""Everything that touches the Workers runtime: request in, response out, and the
database transport over the runtime's `fetch`.

It imports neither pydantic nor the route handlers, so it loads on its own inside
Pyodide; `entry.py` hands it the application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import js
from pyodide.ffi import JsException, to_js
from workers import Request as WorkersRequest
from workers import Response as WorkersResponse

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
    """The database transport inside Workers: the runtime's own `fetch`, called directly,
    with the deadline as an `AbortSignal`, so the runtime itself aborts a call that runs
    over (and no Python timer is armed per call).

    Not the SDK's `workers.fetch`: it goes through `pyodide.http.pyfetch`, which builds an
    AbortController, a second JS Request for the response's URL and, for the headers, an
    `email.message.Message`, which together cost more Python time than the call itself."""

    async def __call__(self, call: HttpCall) -> HttpReply:
        try:
            reply = await js.fetch(
                call.url,
                method="POST",
                headers=to_js(list(call.headers.items())),
                body=call.body.decode(),
                signal=js.AbortSignal.timeout(max(1, round(call.timeout * 1000))),
            )
            body = (await reply.arrayBuffer()).to_bytes()
        except JsException as exc:  # no response came, or its body broke off
            if exc.name == "TimeoutError":
                raise TransportFailure(f"no answer within {call.timeout:g} s") from None
            raise TransportFailure(exc.message) from None
        return HttpReply(reply.status, dict(js.Array.from_(reply.headers).to_py()), body)


async def to_request(request: Any) -> Request:
    """The app's Request from the runtime's JS one, read directly (the SDK's wrapper
    copies the headers into an `email.message.Message` first)."""
    url = urlsplit(request.url)
    # Fetch's Headers: names lower-cased, a repeated name's values joined with ", "
    # (Set-Cookie's given one by one: the last counts); values stripped as the SDK does
    headers = {name: value.strip() for name, value in js.Array.from_(request.headers).to_py()}
    declared = headers.get("content-length", "")
    # the length before int(): past 4,300 digits int() raises instead of comparing
    too_large = (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > len(str(MAX_BODY_BYTES)) or int(declared) > MAX_BODY_BYTES)
    )
    # the JS request's own string: the SDK's `method` is an HTTPMethod enum, which raises
    # for methods it does not list (QUERY, PROPFIND...) instead of letting the router 405
    method = str(request.method).upper()
    body = b""
    if not too_large and method not in ("GET", "HEAD"):
        body = (await request.arrayBuffer()).to_bytes()
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
    """The SDK's Response around a JS one built here (the SDK's own constructor checks
    and converts its arguments one by one)."""
    body = response.body if response.body and response.status not in (204, 304) else None
    return WorkersResponse(
        js.Response.new(
            None if body is None else to_js(body),
            status=response.status,
            headers=to_js(list(response.headers.items())),
        )
    )


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
        # (the env it was built from, its JS identity, its values, database, why none)
        self._database: tuple[
            Any, int | None, tuple[str | None, ...], Database | None, ConfigurationError | None
        ] = (None, None, (), None, None)

    def _database_for(self, env: Any) -> tuple[Database | None, ConfigurationError | None]:
        """The runtime hands every request the isolate's one JS `env` (the SDK wraps it
        anew each time): the same object (`js_id`, kept alive here so that its id is
        never reused) has the same values, which are read again only for another one."""
        identity = getattr(env, "js_id", None)
        _, kept_identity, key, database, problem = self._database
        if identity is not None and identity == kept_identity:
            return database, problem
        values = env_values(env)
        if tuple(values.values()) != key:
            database, problem = database_from_env(values, self._transport)
        self._database = (env, identity, tuple(values.values()), database, problem)
        return database, problem

    async def serve(self, request: WorkersRequest | Any, env: Any, ctx: Any) -> WorkersResponse:
        """Answer one request. `request` may be the SDK's Request or the runtime's JS one."""
        if isinstance(request, WorkersRequest):
            request = request.js_object
        database, problem = self._database_for(env)

        def defer(work: Awaitable[Any]) -> None:
            ctx.waitUntil(asyncio.ensure_future(work))

        services = Services(database=database, defer=defer, configuration_error=problem)
        response = await self._handle(await to_request(request), services)
        return to_workers_response(response)
