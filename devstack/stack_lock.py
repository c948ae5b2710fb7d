"""One `./dev up` per state directory, and only on free ports.

A second start finds the first one's lock (an flock on `<state>/devstack.lock`, released
by the kernel however the first process ends) or its ports in use, and refuses before it
touches anything: no database started or stopped, no file written.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class StackBusy(Exception):
    """Raised when the state directory or a port already belongs to a running stack."""


@contextlib.contextmanager
def exclusive_stack(state: Path, record_pid: bool = True) -> Iterator[None]:
    """Hold the state directory's lock for the life of the stack."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "devstack.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StackBusy(
                f"another ./dev up (pid {holder}) is running with the state in {state}; "
                "stop it (Ctrl-C in its terminal) or pass --state-dir"
            ) from None
        if record_pid:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which stack this is: its ports and its state directory."""
    parser.add_argument("--port", type=int, default=8787, help="the Worker (default 8787)")
    parser.add_argument("--gateway-port", type=int, default=4444, help="default 4444")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / ".local",
        help="where the database and its password live (default .local)",
    )


def refuse_if_busy(arguments: list[str]) -> int:
    """`./dev up`'s first step, before any set-up: 1 (and why) if the stack that these
    arguments name is already running, else 0. The lock is only tried, never kept: the
    stack takes it for good once it starts."""
    parser = argparse.ArgumentParser(add_help=False)
    add_stack_arguments(parser)
    options, _ = parser.parse_known_args(arguments)
    try:
        with exclusive_stack(options.state_dir.resolve(), record_pid=False):
            require_free_ports({"the Worker": options.port, "the gateway": options.gateway_port})
    except StackBusy as busy:
        print(f"devstack: not starting: {busy}", file=sys.stderr, flush=True)
        return 1
    return 0


def require_free_ports(ports: dict[str, int]) -> None:
    """Refuse when something already listens on one of `ports` (name -> port)."""
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise StackBusy(
                    f"port {port} ({name}) is in use, perhaps by another ./dev up; "
                    f"stop it or choose another port"
                ) from None


if __name__ == "__main__":
    raise SystemExit(refuse_if_busy(sys.argv[1:]))
