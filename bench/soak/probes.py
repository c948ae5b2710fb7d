"""What the soak measures of the stack between requests: each watched process's memory
and open file descriptors (psutil), the app role's server connections
(pg_stat_activity, from the superuser's own connection, which is not counted), and the
shared cache's entries (Redis DBSIZE).

The watched groups: the Worker's host (node), the gateway's supervisor, each gateway
worker, PostgreSQL (the postmaster and every process it started, added up), redis.
A group's membership is looked up at every sample, so a restarted gateway worker shows
as a changed pid (`Sample.pids`), never as a silently missing figure.

PostgreSQL's descriptors are counted without its regular files: each backend keeps
relation files open in a cache of its own (bounded by max_files_per_process), which
fills as the soak's tables grow their forks; its sockets and pipes are what a leak of
connections would add to.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench.soak.stack import Stack
from tests.support.services import APP_USER

HOST = "Worker host (node)"
SUPERVISOR = "gateway supervisor"
POSTGRES = "postgres (total)"
REDIS = "redis"


def gateway_worker(n: int) -> str:
    return f"gateway worker {n}"


@dataclass(frozen=True)
class Sample:
    """One group of processes at one moment; `private` (see `own_memory`) only in full
    samples of PostgreSQL, over its app role's backends (`private_of` of them): its
    auxiliary processes come and go (autovacuum workers) and are bounded by settings."""

    rss: int
    fds: int
    pids: tuple[int, ...]
    private: int | None = None
    private_of: int = 0


class Probes:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._admin = stack.postgres.admin()
        self._host = psutil.Process(stack.worker.process.pid)
        self._supervisor = psutil.Process(stack.gateway.process.pid)
        self._redis = psutil.Process(stack.redis.pid)

    def close(self) -> None:
        self._admin.close()

    def groups(self) -> dict[str, list[psutil.Process]]:
        workers = sorted(self._supervisor.children(), key=lambda p: p.pid)
        return {
            HOST: [host_process(self._host)],
            SUPERVISOR: [self._supervisor],
            **{gateway_worker(n): [w] for n, w in enumerate(workers, start=1)},
            POSTGRES: postgres_processes(self.stack.postgres.data_dir),
            REDIS: [self._redis],
        }

    def processes(self, full: bool = False) -> dict[str, Sample]:
        backends = self.app_backends() if full else set()
        return {
            name: sample(members, backends if name == POSTGRES else set(), files=name != POSTGRES)
            for name, members in self.groups().items()
        }

    def app_backends(self) -> set[int]:
        rows = self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s", [APP_USER]
        ).fetchall()
        return {int(str(row[0])) for row in rows}

    def server_connections(self) -> int:
        row = self._admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [APP_USER]
        ).fetchone()
        assert row is not None
        return int(str(row[0]))

    def cache_entries(self) -> int:
        return redis_dbsize(self.stack.redis_url)


def host_process(launched: psutil.Process) -> psutil.Process:
    """The node process serving the Worker: the one launched (the host execs node), or,
    where `node` on PATH is a launcher that starts it as a child, the node below it.
    Told by its program's name (node names its main thread "MainThread")."""
    for process in (launched, *launched.children(recursive=True)):
        with contextlib.suppress(psutil.Error, IndexError):
            if os.path.basename(process.cmdline()[0]) == "node":
                return process
    return launched


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children()]


def sample(members: list[psutil.Process], private_of: set[int], files: bool = True) -> Sample:
    """Figures added up over the group; a process that ended meanwhile (a backend
    closing) is left out of this sample. `private_of`: the pids whose `own_memory` is
    added up; `files`: count descriptors of regular files too."""
    rss = fds = private = measured = 0
    pids = []
    for process in members:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                if process.pid in private_of:
                    private, measured = private + own_memory(process), measured + 1
                fds += process.num_fds() if files else descriptors_but_files(process.pid)
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
        pids.append(process.pid)
    return Sample(rss, fds, tuple(pids), private if private_of else None, measured)


def own_memory(process: psutil.Process) -> int:
    """Resident memory of the process's private mappings (its heap, stack, libraries'
    writable data), not of shared ones: a page of PostgreSQL's shared buffers touched
    by one backend only counts as that backend's in USS, so USS grows as the tables
    fill shared_buffers; this does not."""
    return sum(
        region.private_clean + region.private_dirty
        for region in process.memory_maps(grouped=False)
        if region.perms[3:4] == "p"
    )


def descriptors_but_files(pid: int) -> int:
    """Sockets, pipes, eventfds...: every descriptor whose target is not a path."""
    count = 0
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        try:
            if not os.readlink(f"{folder}/{fd}").startswith("/"):
                count += 1
        except FileNotFoundError:  # closed meanwhile
            continue
    return count


def redis_dbsize(url: str) -> int:
    """DBSIZE over RESP, the whole exchange."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=5) as conn:
        conn.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            answer += chunk
    if not answer.startswith(b":"):
        raise RuntimeError(f"redis answered DBSIZE with {answer!r}")
    return int(answer[1:].strip())
