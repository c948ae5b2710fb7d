"""Serving HTTP: one gateway process, alone or as one of `--workers`."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import uvloop
from aiohttp import web

from poolgate.config import Settings, server_tls_context
from poolgate.faces.neon_http.app import Gateway, answer_unparsable
from poolgate.faces.neon_http.json_server import JsonErrorServer
from poolgate.siblings import Siblings


def run(settings: Settings, worker: tuple[int, Path] | None) -> None:
    """Serve until SIGINT or SIGTERM; `worker`: this process's index among the workers
    and the directory of their sockets, when a supervisor started it."""
    siblings = None
    if worker is not None:
        index, directory = worker
        settings = settings.for_worker(index)
        siblings = Siblings(directory, index, settings.workers)
    uvloop.run(serve(settings, siblings))


async def serve(settings: Settings, siblings: Siblings | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and close the pools.
    With `siblings`, this is one of several workers sharing the port."""
    gateway = Gateway(settings, siblings=siblings)
    await gateway.start()
    server = JsonErrorServer(
        gateway.handle,
        answer_parse_error=answer_unparsable,
        handler_cancellation=True,  # a client that hangs up cancels its request
        access_log=None,
    )
    runner = web.ServerRunner(server)
    await runner.setup()
    tls = server_tls_context(settings) if settings.tls_cert else None
    site = web.TCPSite(
        runner,
        settings.listen_host,
        settings.listen_port,
        backlog=1024,
        ssl_context=tls,
        reuse_port=siblings is not None,
    )
    await site.start()
    worker = f', "worker": {siblings.index}' if siblings is not None else ""
    logging.getLogger("poolgate").info(
        '{"event": "listening", "url": "%s://%s:%d"%s}',
        "https" if tls else "http",
        settings.listen_host,
        settings.listen_port,
        worker,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        # WebSocket sessions never end by themselves: told first (57P01), so the server's
        # shutdown does not wait its whole timeout for them
        await gateway.sessions.close()
        await runner.cleanup()
        await gateway.close()
