"""The Worker's route table served on CPython, for when workerd's Python runtime cannot
start (it downloads Pyodide at start-up). Same app, same `.dev.vars`; the transport is
httpx instead of the runtime's fetch, and deferred work runs as asyncio tasks instead
of `ctx.waitUntil`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from app import App, Services, database_from_env
from db.transport import HttpxTransport
from devstack.migrate import read_dotenv
from web import MAX_BODY_BYTES, Request


def services_from(
    dev_vars: Path, transport: HttpxTransport, tasks: set[asyncio.Task[Any]]
) -> Services:
    def defer(work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    database, problem = database_from_env(read_dotenv(dev_vars), transport)
    return Services(database, defer, configuration_error=problem)


def create_server(app: App, dev_vars: Path) -> web.Application:
    server = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    transport = HttpxTransport()
    tasks: set[asyncio.Task[Any]] = set()
    services = services_from(dev_vars, transport, tasks)

    async def handle(incoming: web.Request) -> web.Response:
        declared = incoming.content_length or 0
        too_large = declared > MAX_BODY_BYTES
        body = b""
        if not too_large:
            try:
                body = await incoming.read()
            except web.HTTPRequestEntityTooLarge:
                too_large = True
        request = Request(
            method=incoming.method,
            path=incoming.path,
            query=dict(incoming.query),
            headers={k.lower(): v for k, v in incoming.headers.items()},
            body=body,
            body_too_large=too_large,
        )
        response = await app.handle(request, services)
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        return web.Response(status=response.status, body=response.body or None, headers=headers)

    async def close(_: web.Application) -> None:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await transport.aclose()

    server.router.add_route("*", "/{tail:.*}", handle)
    server.on_cleanup.append(close)
    return server


def serve(app: App, dev_vars: Path, host: str, port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per query is noise here
    web.run_app(
        create_server(app, dev_vars),
        host=host,
        port=port,
        print=None,
        access_log_format="worker: %r %s %Tfs",
    )
