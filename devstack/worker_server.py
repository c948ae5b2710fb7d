"""The Worker's route table served on CPython, for when workerd's Python runtime cannot
start (it downloads Pyodide at start-up). Same app, same `.dev.vars`; the transport is
aiohttp's client instead of the runtime's fetch, and deferred work runs as asyncio tasks
instead of `ctx.waitUntil`, on uvloop.

It is aiohttp's low-level server, so every answer is the app's: the path is handed over
as sent (percent-encoding kept), request lines and headers far past the app's own
limits reach the app (which answers 414/431 JSON), and what aiohttp still refuses to
parse is answered with the app's JSON error body too.

    PYTHONPATH=src:. python -m devstack.worker_server --dev-vars .dev.vars --port 8787
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from poolgate.json_server import JsonErrorServer, parse_failure

from app import App, Services, database_from_env
from db.transport import Transport
from devstack.aiohttp_transport import AiohttpTransport
from devstack.migrate import read_dotenv
from devstack.static_assets import find_asset
from errors import BadRequest, error_response
from routes.table import build_app
from web import MAX_BODY_BYTES, Request

# aiohttp refuses longer request lines and header lines itself; the app's limits
# (web.MAX_URL_BYTES, web.MAX_HEADER_BYTES) are far below, so the app answers first.
PARSER_LINE_LIMIT = 1024 * 1024


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


async def to_request(incoming: web.BaseRequest) -> Request:
    body = await read_body(incoming)
    path, _, query_string = incoming.raw_path.partition("?")
    return Request(
        method=incoming.method,
        path=path,
        query=dict(incoming.query),
        query_string=query_string,
        headers={k.lower(): v for k, v in incoming.headers.items()},
        body=body or b"",
        body_too_large=body is None,
    )


def to_aiohttp(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    # HEAD: the app gives no body but GET's Content-Length, which aiohttp then keeps
    return web.Response(status=status, body=body or None, headers=headers)


def answer_unparsable(exc: BaseException | None) -> web.Response:
    """What aiohttp could not parse is answered as the app answers a bad request."""
    answer = error_response(
        BadRequest(f"the request is not valid HTTP/1.1: {parse_failure(exc)}"), str(uuid.uuid4())
    )
    return to_aiohttp(answer.status, answer.body, answer.headers)


async def run(app: App, dev_vars: Path, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; then finish deferred work and close the transport."""
    transport = AiohttpTransport()
    tasks: set[asyncio.Task[Any]] = set()
    services = services_from(dev_vars, transport, tasks)

    async def handle(incoming: web.BaseRequest) -> web.StreamResponse:
        path, _, query = incoming.raw_path.partition("?")
        asset = find_asset(incoming.method, path, query)
        if asset is not None:  # as workerd serves [assets]: before the Worker
            return to_aiohttp(asset.status, asset.body, asset.headers)
        response = await app.handle(await to_request(incoming), services)
        return to_aiohttp(response.status, response.body, response.headers)

    server = JsonErrorServer(
        handle,
        answer_parse_error=answer_unparsable,
        max_line_size=PARSER_LINE_LIMIT,
        max_field_size=PARSER_LINE_LIMIT,
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
