"""The soak (`./dev soak`, bench/soak/): its verdict's rules one by one on made-up
rows, then a one-minute soak of the real stack, whose verdict must hold.

The one-minute run asserts growth, statuses and data, never speed: request counts
depend on the machine, so each kind of request only has to have been answered at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak.load import HOSTILE, Kind
from bench.soak.probes import HOST, POSTGRES, gateway_worker
from bench.soak.verdict import (
    Check,
    IntervalRow,
    ProcessFigures,
    WriteAudit,
    judge,
)

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
KINDS = tuple(Kind)


def figures(rss_mb: float = 100, fds: int = 30, pids: tuple[int, ...] = (10,)) -> ProcessFigures:
    """RSS `rss_mb`, a quarter of it in the private mappings of its `pids`."""
    return ProcessFigures(int(rss_mb * MB), int(rss_mb * MB) // 4, len(pids), fds, fds, pids)


WORKER = gateway_worker(1)


def row(number: int, connections: int = 4, **changed: ProcessFigures) -> IntervalRow:
    """An interval of a steady run; `changed`: other figures for host=, worker= or
    postgres=."""
    processes = {
        HOST: figures(pids=(1,)),
        WORKER: figures(pids=(2,)),
        POSTGRES: figures(pids=(3, 4, 5)),
    }
    for name, value in changed.items():
        processes[{"host": HOST, "worker": WORKER, "postgres": POSTGRES}[name]] = value
    return IntervalRow(
        number=number,
        ended=60.0 * number,
        statuses={200: 100},
        by_kind=dict.fromkeys(KINDS, 10),
        unexpected=0,
        p50_ms=1.0,
        p99_ms=2.0,
        processes=processes,
        connections=connections,
        connections_max=connections,
        cache_entries=3,
    )


GOOD_WRITES = WriteAudit(acknowledged=10)


def failed(
    rows: list[IntervalRow], writes: WriteAudit = GOOD_WRITES, unexpected: int = 0
) -> list[Check]:
    """The checks that failed; `unexpected`: that many answers of status 500."""
    answers = {"uncached read: -> 500 b'{}'": unexpected} if unexpected else {}
    verdict = judge(rows, writes, pool_size=10, unexpected=answers, kinds=KINDS)
    return [check for check in verdict.checks if not check.passed]


def test_a_steady_run_passes_every_check() -> None:
    assert failed([row(1), row(2), row(3)]) == []


def test_memory_up_to_ten_percent_over_the_first_interval_passes() -> None:
    grown = figures(rss_mb=110, pids=(2,))
    assert failed([row(1), row(2), row(3, worker=grown)]) == []


def test_memory_more_than_ten_percent_over_the_first_interval_fails() -> None:
    grown = figures(rss_mb=111, pids=(2,))
    [check] = failed([row(1), row(2), row(3, worker=grown)])
    assert check.rule == f"memory: {WORKER}"
    assert "+11.0%" in check.detail


def test_growth_during_the_first_interval_is_warm_up_and_not_counted() -> None:
    """The baseline is the first interval's end: what grew before it does not count."""
    warm = figures(rss_mb=400, pids=(1,))
    assert failed([row(1, host=warm), row(2, host=warm)]) == []


def test_postgres_memory_is_judged_per_process_so_one_more_pooled_backend_passes() -> None:
    one_more_backend = figures(rss_mb=133, pids=(3, 4, 5, 6))
    assert failed([row(1), row(2), row(3, postgres=one_more_backend)]) == []


def test_postgres_backends_growing_in_private_memory_fail() -> None:
    bloated = figures(rss_mb=120, pids=(3, 4, 5))
    [check] = failed([row(1), row(2), row(3, postgres=bloated)])
    assert check.rule == f"memory: {POSTGRES}"


def test_descriptors_above_the_first_intervals_highest_fail() -> None:
    [check] = failed([row(1), row(2), row(3), row(4, worker=figures(fds=31, pids=(2,)))])
    assert check.rule == f"fds: {WORKER}"


def test_a_descriptor_step_that_then_stays_through_the_second_half_passes() -> None:
    """A pool meeting a rarer peak of concurrency opens one more connection and keeps
    it: a step, not a climb."""
    stepped = figures(fds=31, pids=(2,))
    rows = [row(1), row(2, worker=stepped), row(3, worker=stepped), row(4, worker=stepped)]
    assert failed(rows) == []


def test_descriptors_still_climbing_in_the_second_half_fail() -> None:
    climbing = [row(1), *(row(n, worker=figures(fds=30 + n, pids=(2,))) for n in (2, 3, 4))]
    [check] = failed(climbing)
    assert check.rule == f"fds: {WORKER}"


def test_server_connections_above_the_baseline_or_the_pool_size_fail() -> None:
    [climbed] = failed([row(1), row(2), row(3), row(4, connections=5)])
    assert climbed.rule == "server connections"
    [over_the_bound] = failed([row(1, connections=11), row(2, connections=11)])
    assert over_the_bound.rule == "server connections"


def test_a_single_unexpected_status_fails_the_verdict() -> None:
    [check] = failed([row(1), row(2)], unexpected=1)
    assert check.rule == "no unexpected status"
    assert "500" in check.detail


@pytest.mark.parametrize(
    "audit",
    [
        WriteAudit(acknowledged=10, missing=("soak-0-3",)),
        WriteAudit(acknowledged=10, duplicated=("soak-0-3",)),
        WriteAudit(acknowledged=10, wrong_id=("soak-0-3",)),
        WriteAudit(acknowledged=10, given_up=("soak-0-3",)),
        WriteAudit(acknowledged=0),
    ],
    ids=["missing", "twice", "another-id", "given-up", "none-acknowledged"],
)
def test_an_acknowledged_write_not_there_exactly_once_fails(audit: WriteAudit) -> None:
    [check] = failed([row(1), row(2)], writes=audit)
    assert check.rule == "acknowledged writes"


def test_a_restarted_gateway_worker_fails() -> None:
    restarted = figures(pids=(99,))
    [check] = failed([row(1), row(2, worker=restarted)])
    assert check.rule == f"process kept: {WORKER}"


def test_a_kind_of_request_never_sent_fails() -> None:
    rows = [row(1), row(2)]
    silent = [dataclasses.replace(r, by_kind={**r.by_kind, Kind.TRANSFER.value: 0}) for r in rows]
    [check] = failed(silent)
    assert check.rule == "every kind of request sent"


def test_one_interval_is_no_verdict() -> None:
    verdict = judge([row(1)], GOOD_WRITES, pool_size=10, unexpected={}, kinds=KINDS)
    assert not verdict.passed


def test_a_minute_of_soak_on_the_whole_stack_holds_its_verdict(tmp_path: Path) -> None:
    """`./dev soak` for 60 s in 2 intervals of 30 s: Pyodide host, 2 gateway workers with the
    Redis cache, embedded PostgreSQL; exit status 0 and every kind of request answered."""
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            *("--minutes", "1", "--interval-seconds", "30"),
            *("--state-dir", str(tmp_path), "--report", str(report)),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    print(output)  # the table and the verdict, for `pytest -s`
    assert run.returncode == 0, output
    figures = json.loads(report.read_text())
    assert figures["passed"] is True
    assert len(figures["rows"]) == 2
    for kind in Kind:
        assert sum(figures["totals"][kind.value].values()) > 0, kind
    assert {str(h.status) for h in HOSTILE} <= set(figures["totals"][Kind.HOSTILE.value])
    assert figures["writes"]["acknowledged"] > 0
    assert "soak: PASSED" in run.stdout
