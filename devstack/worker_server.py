"""The Worker's route table served on CPython, for when workerd's Python runtime cannot
start (it downloads Pyodide at start-up). Same app, same `.dev.vars`; the transport is
aiohttp's client instead of the runtime's fetch, and deferred work runs as asyncio tasks
instead of `ctx.waitUntil`, on uvloop.

It is aiohttp's low-level server, so every answer is the app's: the path is handed over
as sent (percent-encoding kept; an absolute-form target by its path), request lines far
past the app's own limit reach the app (which answers 414 JSON), and what aiohttp still
refuses to parse is answered with the app's JSON error body too. What workerd refuses
before a Worker runs is refused here first, as the Pyodide host does: headers over
32 KiB counted on the raw lines (431), a missing, repeated or invalid Host (400), a
target that is not a path (400). Repeated headers reach the app joined with ", ", as the
Fetch API's Headers join them.

    PYTHONPATH=src:. python -m devstack.worker_server --dev-vars .dev.vars --port 8787
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import http_exceptions, web
from poolgate.faces.neon_http.json_server import JsonErrorServer, parse_failure

from app import App, Services, database_from_env
from db.transport import Transport
from devstack.aiohttp_transport import AiohttpTransport
from devstack.migrate import read_dotenv
from devstack.static_assets import find_asset
from errors import AppError, BadRequest, HeadersTooLarge, error_response
from routes.table import build_app
from web import MAX_BODY_BYTES, MAX_HEADER_BYTES, Request, header_block_bytes, parse_query

# aiohttp refuses longer request lines and header lines itself; the app's limits
# (web.MAX_URL_BYTES, web.MAX_HEADER_BYTES) are far below, so the app answers first.
PARSER_LINE_LIMIT = 1024 * 1024
# A header line counts at least 5 bytes (web.header_block_bytes), so a request with more
# lines than this is over MAX_HEADER_BYTES whatever they hold: aiohttp stops counting
# there and the request is answered 431.
MAX_HEADER_LINES = MAX_HEADER_BYTES // 5 + 1
# RFC 3986's host (IP literal or reg-name, percent-encoding well formed) and optional
# port; no user information, path, query or fragment. The same as pyodide_host.mjs.
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
    r"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::(?P<port>[0-9]*))?"
)
_ABSOLUTE_TARGET = re.compile(r"https?://[^/?#]*(?P<rest>.*)", re.IGNORECASE | re.DOTALL)


def services_from(dev_vars: Path, transport: Transport, tasks: set[asyncio.Task[Any]]) -> Services:
    def defer(work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    database, problem = database_from_env(read_dotenv(dev_vars), transport)
    return Services(database, defer, configuration_error=problem)


async def read_body(incoming: web.BaseRequest) -> bytes | None:
    """The body, or None when it is over MAX_BODY_BYTES (not read further)."""
    if (incoming.content_length or 0) > MAX_BODY_BYTES:
        return None
    if incoming.content.is_eof():  # all there already (no loop turn to see its end)
        body = incoming.content.read_nowait()
        return None if len(body) > MAX_BODY_BYTES else body
    chunks, size = [], 0
    async for chunk in incoming.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def target_path(target: str) -> str | None:
    """The path and query the app sees: an origin-form target as sent, an absolute-form
    one by its path and query; None for anything else (`*`, a bare name)."""
    if target.startswith("/"):
        return target
    absolute = _ABSOLUTE_TARGET.fullmatch(target)
    if absolute is None:
        return None
    rest = absolute["rest"]
    return rest if rest.startswith("/") else f"/{rest}"


def valid_host(host: str) -> bool:
    found = _HOST.fullmatch(host)
    if found is None:
        return False
    port = found["port"] or "0"
    # the length first: int() of a very long digit string raises instead of comparing
    return len(port) <= 5 and int(port) <= 65535


def refusal(incoming: web.BaseRequest) -> AppError | None:
    """Why workerd would refuse this request before the Worker runs, if it would."""
    raw = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in incoming.raw_headers
    ]
    if header_block_bytes(raw) > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"the headers must be at most {MAX_HEADER_BYTES} bytes")
    hosts = [value for name, value in raw if name.lower() == "host"]
    if not hosts and incoming.version >= (1, 1):
        return BadRequest("an HTTP/1.1 request needs a Host header")
    if len(hosts) > 1:
        return BadRequest("the request has more than one Host header")
    if hosts and not valid_host(hosts[0]):
        return BadRequest("the Host header is not a valid host[:port]")
    if target_path(incoming.raw_path) is None:
        return BadRequest("the request target must be a path (or an absolute http URL)")
    return None


def joined_headers(incoming: web.BaseRequest) -> dict[str, str]:
    """Names lower-cased; a repeated header's values joined with ", " in order."""
    headers: dict[str, str] = {}
    for name, value in incoming.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def to_request(incoming: web.BaseRequest, target: str) -> Request:
    # as in workerd (a Fetch API Request has none), a GET or HEAD body never reaches the app
    body = b"" if incoming.method in ("GET", "HEAD") else await read_body(incoming)
    path, _, query_string = target.partition("?")
    return Request(
        method=incoming.method,
        path=path,
        query=parse_query(query_string),
        query_string=query_string,
        headers=joined_headers(incoming),
        body=body or b"",
        body_too_large=body is None,
    )


def to_aiohttp(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    # HEAD: the app gives no body but GET's Content-Length, which aiohttp then keeps
    return web.Response(status=status, body=body or None, headers=headers)


def answer_unparsable(exc: BaseException | None) -> web.Response:
    """What aiohttp could not parse is answered as the app answers a bad request; more
    header lines than MAX_HEADER_LINES is headers over the limit."""
    error: AppError
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in str(exc):
        error = HeadersTooLarge(f"the headers must be at most {MAX_HEADER_BYTES} bytes")
    else:
        error = BadRequest(f"the request is not valid HTTP/1.1: {parse_failure(exc)}")
    return answer_error(error)


def answer_error(error: AppError) -> web.Response:
    answer = error_response(error, str(uuid.uuid4()))
    return to_aiohttp(answer.status, answer.body, answer.headers)


async def run(app: App, dev_vars: Path, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; then finish deferred work and close the transport."""
    transport = AiohttpTransport()
    tasks: set[asyncio.Task[Any]] = set()
    services = services_from(dev_vars, transport, tasks)

    async def handle(incoming: web.BaseRequest) -> web.StreamResponse:
        refused = refusal(incoming)
        if refused is not None:
            return answer_error(refused)
        target = target_path(incoming.raw_path)
        assert target is not None  # refusal() answered any other
        path, _, query = target.partition("?")
        asset = find_asset(incoming.method, path, query)
        if asset is not None:  # as workerd serves [assets]: before the Worker
            return to_aiohttp(asset.status, asset.body, asset.headers)
        response = await app.handle(await to_request(incoming, target), services)
        return to_aiohttp(response.status, response.body, response.headers)

    server = JsonErrorServer(
        handle,
        answer_parse_error=answer_unparsable,
        max_line_size=PARSER_LINE_LIMIT,
        max_field_size=PARSER_LINE_LIMIT,
        max_headers=MAX_HEADER_LINES,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format="worker: %r %s %Tfs",
    )
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await transport.aclose()


def serve(app: App, dev_vars: Path, host: str, port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(app, dev_vars, host, port))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.worker_server")
    parser.add_argument("--dev-vars", type=Path, default=Path(".dev.vars"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args()
    serve(build_app(), args.dev_vars, args.host, args.port)


if __name__ == "__main__":
    main()
