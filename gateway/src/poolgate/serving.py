"""Serving HTTP: one gateway process, alone or as one of `--workers`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import uvloop
from aiohttp import web

from poolgate.config import Settings, server_tls_context
from poolgate.core.errors import GatewayError
from poolgate.faces.accelerate.companion_process import worker_socket
from poolgate.faces.accelerate.face import claims
from poolgate.faces.neon_http.app import Gateway, answer_unparsable
from poolgate.faces.neon_http.json_server import JsonErrorServer
from poolgate.replicas import FailureAnswer, Replicas, new_name
from poolgate.siblings import Siblings
from poolgate.supervisor import WorkerIdentity


def run(settings: Settings, worker: WorkerIdentity | None) -> None:
    """Serve until SIGINT or SIGTERM; `worker`: this process's place among the workers,
    when a supervisor started it."""
    siblings = None
    replica = None
    if worker is not None:
        settings = settings.for_worker(worker.index)
        siblings = Siblings(worker.directory, worker.index, settings.workers)
        replica = worker.replica
    uvloop.run(serve(settings, siblings, replica))


async def serve(
    settings: Settings, siblings: Siblings | None = None, replica: str | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and close the pools.
    With `siblings`, this is one of several workers sharing the port; `replica`: the name
    they share (with --advertise-url)."""
    gateway = Gateway(settings, siblings=siblings)
    replicas = None
    if settings.advertise_url is not None:
        index = siblings.index if siblings is not None else 0
        replicas = Replicas(
            settings,
            replica or new_name(),
            index,
            gateway.handle,
            gateway.metrics.registry,
            _accelerate_failures(gateway, settings),
        )
        gateway.service.transactions.id_prefix += f"{replicas.name}."
        if gateway.accelerate is not None:  # its transaction ids name the replica too
            gateway.accelerate.replica = (replicas.name, index)
            gateway.accelerate.forward = replicas.forward
    await gateway.start()
    if replicas is not None:
        await replicas.start()
    server = JsonErrorServer(
        replicas.handle if replicas is not None else gateway.handle,
        answer_parse_error=answer_unparsable,
        handler_cancellation=True,  # a client that hangs up cancels its request
        access_log=None,
    )
    # in-flight requests end by their deadline: stopping waits no longer for them
    runner = web.ServerRunner(server, shutdown_timeout=settings.request_deadline + 1.0)
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
    companion_runner = await _serve_companion(gateway, siblings)
    worker = f', "worker": {siblings.index}' if siblings is not None else ""
    logging.getLogger("poolgate").info(
        '{"event": "listening", "url": "%s://%s:%d"%s}',
        "https" if tls else "http",
        settings.listen_host,
        settings.listen_port,
        worker,
    )
    stopping = Stopping()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.terminate)
    loop.add_signal_handler(signal.SIGINT, stopping.interrupt)
    try:
        await stopping.requested.wait()
        if stopping.drain:
            await drain(gateway, settings, stopping)
    finally:
        # WebSocket sessions never end by themselves: told first (57P01), so the server's
        # shutdown does not wait its whole timeout for them
        await gateway.sessions.close()
        if replicas is not None:  # its transactions have ended (or a signal cut them short)
            await replicas.deregister()
        if stopping.now.is_set():  # a second signal: in-flight requests end now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.cleanup(), 0.1)
        else:
            await runner.cleanup()
        if companion_runner is not None:
            await companion_runner.cleanup()
        if replicas is not None:
            await replicas.close()
        await gateway.close()


async def _serve_companion(gateway: Gateway, siblings: Siblings | None) -> web.ServerRunner | None:
    """The Accelerate companion's way into the pool: WebSocket sessions on this worker's
    private socket (see faces/accelerate/companion_process)."""
    if gateway.accelerate is None or siblings is None:
        return None
    server = JsonErrorServer(
        gateway.serve_companion,
        answer_parse_error=answer_unparsable,
        handler_cancellation=True,
        access_log=None,
    )
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    path = worker_socket(siblings.directory, siblings.index)
    path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(path)).start()
    path.chmod(0o600)
    return runner


def _accelerate_failures(gateway: Gateway, settings: Settings) -> FailureAnswer:
    """A failed hop of an Accelerate call answered by that face, Prisma-shaped: its body
    reader raises the failure, which the face answers as its own (and, were it to read
    no body first, it would find the transaction another replica's: P2028)."""

    async def answer(request: web.BaseRequest, error: GatewayError) -> web.StreamResponse | None:
        face = gateway.accelerate
        if face is None or not claims(request, True):
            return None

        async def failed() -> bytes:
            raise error

        deadline = asyncio.get_running_loop().time() + settings.request_deadline
        return await face.answer(request, failed, deadline)

    return answer


class Stopping:
    """SIGTERM: drain, then stop (a second SIGTERM or a SIGINT: at once); SIGINT alone:
    stop without the drain, finishing in-flight requests."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.now = asyncio.Event()
        self.drain = False

    def terminate(self) -> None:
        if self.requested.is_set():
            self.now.set()
            return
        self.drain = True
        self.requested.set()

    def interrupt(self) -> None:
        if self.requested.is_set():
            self.now.set()
        self.requested.set()


async def drain(gateway: Gateway, settings: Settings, stopping: Stopping) -> None:
    """For a load balancer: /readyz answers 503 at once while everything else is served
    for --drain-seconds, except new interactive transactions and WebSocket sessions
    (refused, to be opened on another replica); then open transactions are waited for,
    up to their own expiry. A second signal cuts either wait short."""
    gateway.draining = True
    gateway.sessions.refuse_new()
    logging.getLogger("poolgate").info(
        '{"event": "draining", "seconds": %s}', json.dumps(settings.drain_seconds)
    )
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.now.wait(), settings.drain_seconds)
    transactions = gateway.service.transactions
    deadline = loop.time() + settings.transaction_timeout_max + settings.request_deadline
    while transactions.open_count and not stopping.now.is_set() and loop.time() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.now.wait(), 0.05)
