"""`--workers N`: N processes serving one port, and the process that keeps them running.

The supervisor serves nothing itself and never loads libpq or aiohttp (it stays small).
It checks that the port is free (SO_REUSEPORT would otherwise let a second gateway join
the first one's port silently), starts the workers (each `poolgate serve` again, with
its index in `POOLGATE_WORKER`), restarts a worker that dies (but stops, with status 2,
when a worker refuses the settings), and on SIGTERM or SIGINT passes the signal on and
waits for all of them to finish their requests. Workers die with the supervisor
(PR_SET_PDEATHSIG), so a killed supervisor never leaves workers holding the port or
server connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from poolgate.config import ConfigError, Settings

WORKER_ENV = "POOLGATE_WORKER"  # "<index>:<supervisor pid>:<directory of the sockets>"
INVALID_CONFIGURATION = 2  # a worker's exit status for settings it refused
RESTARTS_ALLOWED = 5  # within RESTART_WINDOW seconds, before the supervisor gives up
RESTART_WINDOW = 30.0
_PR_SET_PDEATHSIG = 1


def worker_identity() -> tuple[int, Path] | None:
    """This process's worker index and sibling directory, if a supervisor started it;
    from then on the worker dies with its supervisor."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, supervisor, directory = value.split(":", 2)
    _die_with(int(supervisor))
    return int(index), Path(directory)


def _die_with(supervisor: int) -> None:
    """Ask the kernel to SIGKILL this worker when its supervisor dies, however it dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor:  # it died while this worker was starting
        os.kill(os.getpid(), signal.SIGKILL)


def check_port_free(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as the workers bind: connections of an earlier gateway in TIME_WAIT do not
        # count, a socket listening there does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.listen_host, settings.listen_port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.listen_host}:{settings.listen_port}: {exc.strerror}"
            ) from None


def _event(**fields: object) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


class Supervisor:
    """Kept small on purpose (no subprocess, tempfile or ctypes): it holds memory for as
    long as the gateway runs and does nothing but start and watch workers."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.directory = Path(
            os.environ.get("TMPDIR", "/tmp"), f"poolgate-{os.getpid()}-{os.urandom(4).hex()}"
        )
        self.workers: dict[int, int] = {}  # index -> pid
        self.stopping = False
        self.restarts: list[float] = []

    def _start(self, index: int) -> None:
        if self.stopping:
            return  # a signal came while workers were being started
        self.workers[index] = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "poolgate.cli", "serve", *self.argv],
            {**os.environ, WORKER_ENV: f"{index}:{os.getpid()}:{self.directory}"},
        )

    def _stop_all(self, signum: int, frame: object = None) -> None:
        self.stopping = True
        for pid in self.workers.values():  # running, or exited and not yet collected
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self) -> int:
        check_port_free(self.settings)
        self.directory.mkdir(mode=0o700)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_all)
        try:
            for index in range(self.settings.workers):
                self._start(index)
            return self._watch()
        finally:
            self._stop_all(signal.SIGTERM)
            self._reap_all()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _reap_all(self) -> None:
        for pid in self.workers.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _watch(self) -> int:
        """Wait for workers to exit; restart the ones that die while not stopping."""
        if self.stopping:
            self._stop_all(signal.SIGTERM)  # workers started before the signal came
        by_pid = {pid: index for index, pid in self.workers.items()}
        while by_pid:
            pid, status = os.wait()
            index = by_pid.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            del self.workers[index]  # collected: its pid is never signalled again
            if self.stopping:
                continue
            if code == INVALID_CONFIGURATION:  # it said why; restarting cannot help
                self._stop_all(signal.SIGTERM)
                return code
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if t > now - RESTART_WINDOW]
            if len(self.restarts) >= RESTARTS_ALLOWED:
                _event(event="giving_up", reason="workers keep dying", worker=index)
                self._stop_all(signal.SIGTERM)
                return 1
            self.restarts.append(now)
            _event(event="worker_died", worker=index, status=code)
            time.sleep(0.2)
            self._start(index)
            by_pid[self.workers[index]] = index
        return 0
