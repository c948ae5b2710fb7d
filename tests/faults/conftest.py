"""The fault suite: real processes on loopback, faults injected into them, and a summary
table of what was injected, what the stack survived, and what it lost or duplicated.

Its own PostgreSQL (restarting or freezing the shared one would disturb other tiers).
`./dev test` runs it bounded; `./dev faults` runs it at full scale (FAULT_SCALE=full)
and prints the table that the README keeps.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack import postgres as embedded
from devstack.migrate import apply_schema
from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    GatewayFactory,
    start_postgres,
)

FULL = os.environ.get("FAULT_SCALE") == "full"


def scaled(bounded: int, full: int) -> int:
    return full if FULL else bounded


@dataclass
class FaultRow:
    fault: str
    injected: int
    survived: int
    acknowledged_writes_lost: int | None = None  # None: the fault involves no writes
    duplicates: int | None = None
    notes: str = ""


@dataclass
class FaultReport:
    rows: list[FaultRow] = field(default_factory=list)

    def add(self, row: FaultRow) -> None:
        self.rows.append(row)

    def table(self) -> str:
        def cell(value: int | None) -> str:
            return "n/a" if value is None else str(value)

        lines = [
            "| fault | injected | survived | acknowledged writes lost | duplicates | measured |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.fault} | {r.injected} | {r.survived} | {cell(r.acknowledged_writes_lost)}"
            f" | {cell(r.duplicates)} | {r.notes} |"
            for r in self.rows
        ]
        return "\n".join(lines)


REPORT = FaultReport()


@pytest.fixture(scope="session")
def report() -> FaultReport:
    return REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT.rows:
        scale = "full" if FULL else "bounded"
        terminalreporter.write_sep("=", f"fault suite ({scale} scale)")
        terminalreporter.write_line(REPORT.table())


class FaultPostgres:
    """A PostgreSQL of the suite's own that tests may restart and freeze."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server: EmbeddedPostgres = start_postgres(data_dir)
        apply_schema(self.server.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))

    @property
    def upstream_url(self) -> str:
        return self.server.upstream_url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = embedded.start(self.data_dir, stop_at_exit=True)

    def processes(self) -> list[int]:
        """The postmaster and every backend and auxiliary process it started."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def freeze(self) -> list[int]:
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: list[int]) -> None:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue

    def count(self, query: str, *params: object) -> int:
        with self.server.admin(APP_DATABASE) as conn:
            row = conn.execute(query, list(params)).fetchone()
        assert row is not None
        return int(str(row[0]))

    def server_connections(self, user: str = APP_USER) -> int:
        with self.server.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [user]
            ).fetchone()
        assert row is not None
        return int(str(row[0]))


@pytest.fixture(scope="session")
def fault_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultPostgres]:
    server = FaultPostgres(tmp_path_factory.mktemp("fault-pg"))
    yield server
    server.stop()


@pytest.fixture
def fault_gateways(
    fault_postgres: FaultPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Gateways for one test, all stopped after it (so connection counts are its own)."""
    factory = GatewayFactory(fault_postgres.server, tmp_path_factory.mktemp("fault-gateways"))
    yield factory
    factory.stop_all()
    wait_until(lambda: fault_postgres.server_connections() == 0, seconds=10)


@pytest.fixture(autouse=True)
def empty_fault_tables(fault_postgres: FaultPostgres) -> None:
    with fault_postgres.server.admin(APP_DATABASE) as conn:
        conn.execute("TRUNCATE users, posts, logs, idempotency_keys RESTART IDENTITY CASCADE")


def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.05) -> float:
    """Seconds until `condition()` is true; fails past `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(step)
    return time.monotonic() - started
