"""One `./dev up` per state directory, and only on free ports.

A second start finds the first one's lock (an flock on `<state>/devstack.lock`, released
by the kernel however the first process ends) or its ports in use, and refuses before it
touches anything: no database started or stopped, no file written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path


class StackBusy(Exception):
    """Raised when the state directory or a port already belongs to a running stack."""


@contextlib.contextmanager
def exclusive_stack(state: Path) -> Iterator[None]:
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
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


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
