"""`poolgate serve ...`: start the gateway; invalid settings stop it before it listens."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from poolgate.config import ConfigError, parse_settings
from poolgate.supervisor import Supervisor, worker_identity

USAGE = "usage: poolgate serve [--upstream URL] [--listen HOST:PORT] [--pool-size N] [...]"


def main(argv: Sequence[str] | None = None) -> int:
    identity = worker_identity()  # first: a worker must not outlive its supervisor
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
        # a first look: the supervisor leaves the full check of --upstream to its workers
        settings = parse_settings(args[1:], check_upstream=False)
        # the Accelerate companion is a supervisor's child, even beside a single worker
        if identity is None and (settings.workers > 1 or settings.accelerate_keys is not None):
            return Supervisor(settings, args[1:]).run()
        settings = parse_settings(args[1:])
    except ConfigError as exc:
        print(f"poolgate: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    forget_libpq_environment()
    from poolgate.serving import run  # aiohttp, the driver and the rest: workers only

    run(settings, identity)
    return 0


def forget_libpq_environment() -> None:
    """libpq-style clients take defaults from PG* variables (PGPASSWORD, PGSERVICE,
    PGOPTIONS, ...), a passfile and a service file. The gateway's own driver reads none of
    them, but what runs under it might (the Accelerate companion's Node `pg`), and none
    may supply credentials or options for a client's connection: they are dropped
    (upstream settings come from --upstream)."""
    for name in [name for name in os.environ if name.startswith("PG")]:
        del os.environ[name]
    # paths that do not exist: libpq reads nothing from them, and says nothing about it
    nowhere = "/nonexistent/poolgate-reads-no-libpq-files"
    os.environ["PGPASSFILE"] = f"{nowhere}/pgpass"
    os.environ["PGSERVICEFILE"] = f"{nowhere}/pg_service.conf"
    os.environ["PGSYSCONFDIR"] = nowhere


if __name__ == "__main__":
    raise SystemExit(main())
