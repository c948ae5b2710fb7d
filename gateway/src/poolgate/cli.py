"""`poolgate serve ...`: start the gateway; invalid settings stop it before it listens."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web

from poolgate.app import Gateway, answer_unparsable
from poolgate.config import ConfigError, Settings, parse_settings, server_tls_context
from poolgate.json_server import JsonErrorServer

USAGE = "usage: poolgate serve [--upstream URL] [--listen HOST:PORT] [--pool-size N] [...]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE + "\n\nRun 'poolgate serve --help' for every option.")
        return 0 if args else 2
    if args[0] != "serve":
        print(f"poolgate: unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    if "-h" in args[1:] or "--help" in args[1:]:
        parse_settings(["--help"])
    try:
        settings = parse_settings(args[1:])
    except ConfigError as exc:
        print(f"poolgate: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    forget_libpq_environment()
    uvloop.run(serve(settings))
    return 0


def forget_libpq_environment() -> None:
    """libpq takes defaults from PG* variables (PGPASSWORD, PGSERVICE, PGOPTIONS, ...), a
    passfile and a service file: none of them may supply credentials or options for a
    client's connection, so they are dropped (upstream settings come from --upstream)."""
    for name in [name for name in os.environ if name.startswith("PG")]:
        del os.environ[name]
    # paths that do not exist: libpq reads nothing from them, and says nothing about it
    nowhere = "/nonexistent/poolgate-reads-no-libpq-files"
    os.environ["PGPASSFILE"] = f"{nowhere}/pgpass"
    os.environ["PGSERVICEFILE"] = f"{nowhere}/pg_service.conf"
    os.environ["PGSYSCONFDIR"] = nowhere


async def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and close the pools."""
    gateway = Gateway(settings)
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
        runner, settings.listen_host, settings.listen_port, backlog=1024, ssl_context=tls
    )
    await site.start()
    logging.getLogger("poolgate").info(
        '{"event": "listening", "url": "%s://%s:%d"}',
        "https" if tls else "http",
        settings.listen_host,
        settings.listen_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.close()


if __name__ == "__main__":
    raise SystemExit(main())
