"""`--workers N`: N processes serving one port, and the process that keeps them running.

The supervisor serves nothing itself and never loads libpq or aiohttp (it stays small).
It checks that the port is free (SO_REUSEPORT would otherwise let a second gateway join
the first one's port silently), starts the workers (each `poolgate serve` again, with
its index in `POOLGATE_WORKER`), restarts a worker that dies (but stops, with status 2,
when a worker refuses the settings), and on SIGTERM or SIGINT passes the signal on and
waits for all of them to finish their requests. Workers die with the supervisor
(PR_SET_PDEATHSIG), so a killed supervisor never leaves workers holding the port or
server connections. With --accelerate-keys-file it also runs the Accelerate companion
(faces/accelerate/companion_process), restarted like a worker, and stopped only once
every worker has finished (they forward to it until their last request).
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
from dataclasses import dataclass
from pathlib import Path

from poolgate.config import ConfigError, Settings

# "<index>:<supervisor pid>:<replica name>:<directory of the sockets>"
WORKER_ENV = "POOLGATE_WORKER"
INVALID_CONFIGURATION = 2  # a worker's exit status for settings it refused
RESTARTS_ALLOWED = 5  # within RESTART_WINDOW seconds, before the supervisor gives up
RESTART_WINDOW = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    index: int
    directory: Path  # of the siblings' sockets
    replica: str  # the name all workers of this start share (see replicas)


def worker_identity() -> WorkerIdentity | None:
    """This process's place among the workers, if a supervisor started it; from then on
    the worker dies with its supervisor."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, supervisor, replica, directory = value.split(":", 3)
    _die_with(int(supervisor))
    return WorkerIdentity(int(index), Path(directory), replica)


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


def _naming(which: int | str) -> dict[str, object]:
    return {"worker": which} if isinstance(which, int) else {}


class Supervisor:
    """Kept small on purpose (no subprocess, tempfile or ctypes): it holds memory for as
    long as the gateway runs and does nothing but start and watch workers."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.directory = Path(
            os.environ.get("TMPDIR", "/tmp"), f"poolgate-{os.getpid()}-{os.urandom(4).hex()}"
        )
        self.replica = os.urandom(6).hex()  # a new name at every start: see replicas
        self.workers: dict[int, int] = {}  # index -> pid
        self.companion: int | None = None  # the Accelerate companion's pid, if it runs
        self._companion_stdin: int | None = None
        self.stopping = False
        self.restarts: list[float] = []

    def _start(self, index: int) -> None:
        if self.stopping:
            return  # a signal came while workers were being started
        self.workers[index] = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "poolgate.cli", "serve", *self.argv],
            {**os.environ, WORKER_ENV: f"{index}:{os.getpid()}:{self.replica}:{self.directory}"},
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
            if self.settings.accelerate_keys is not None:
                self._start_companion()
            for index in range(self.settings.workers):
                self._start(index)
            return self._watch()
        finally:
            self._stop_all(signal.SIGTERM)
            self._reap_all()
            self._stop_companion()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _start_companion(self) -> None:
        from poolgate.faces.accelerate import companion_process

        if self._companion_stdin is not None:
            os.close(self._companion_stdin)
        self.companion, self._companion_stdin = companion_process.spawn(
            self.settings, self.directory
        )

    def _stop_companion(self) -> None:
        if self.companion is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.companion, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.companion, 0)
        self.companion = None

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
            code = os.waitstatus_to_exitcode(status)
            if pid == self.companion:
                self.companion = None
                if not self.stopping and self._may_restart("companion", code):
                    self._start_companion()
                elif not self.stopping:
                    self._stop_all(signal.SIGTERM)
                    return 1
                continue
            index = by_pid.pop(pid, None)
            if index is None:
                continue
            del self.workers[index]  # collected: its pid is never signalled again
            if self.stopping:
                continue
            if code == INVALID_CONFIGURATION:  # it said why; restarting cannot help
                self._stop_all(signal.SIGTERM)
                return code
            if not self._may_restart(index, code):
                self._stop_all(signal.SIGTERM)
                return 1
            self._start(index)
            by_pid[self.workers[index]] = index
        return 0

    def _may_restart(self, which: int | str, code: int) -> bool:
        """Whether a worker (or the companion) that died may be restarted: not when they
        keep dying (RESTARTS_ALLOWED within RESTART_WINDOW seconds, all counted)."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if t > now - RESTART_WINDOW]
        name = "worker" if isinstance(which, int) else which
        if len(self.restarts) >= RESTARTS_ALLOWED:
            _event(event="giving_up", reason=f"{name}s keep dying", **_naming(which))
            return False
        self.restarts.append(now)
        _event(event=f"{name}_died", status=code, **_naming(which))
        time.sleep(0.2)
        return True
