"""`./dev soak`: the whole local stack under a steady mixed load, a row of figures per
interval, then a verdict; exit status 1 when the verdict fails.

The stack is the soak's own (bench/soak/stack.py): embedded PostgreSQL, redis-server,
a gateway with 2 workers and the Redis cache, the Worker on the Pyodide host. The load
(bench/soak/load.py) comes from this process over loopback: cached and uncached reads,
keyed writes retried until acknowledged, transfers (interactive transactions), /metrics
scrapes and a few hostile requests a second. The rules: bench/soak/verdict.py.

    uv run python -m bench.soak --minutes 10 [--interval-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.soak.load import Kind, Load, Mix, Recorder, Tally, Writes, email_of
from bench.soak.probes import Probes, Sample
from bench.soak.report import header, line, summary
from bench.soak.stack import GATEWAY_WORKERS, Stack, running_stack
from bench.soak.verdict import IntervalRow, ProcessFigures, Verdict, WriteAudit, judge

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE = 120.0  # seconds the clients get to finish (a keyed write's retries) at the end


def percentile(ordered: list[float], share: float) -> float:
    """Nearest rank; 0 for no values."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def interval_row(
    number: int,
    ended: float,
    tally: Tally,
    end: dict[str, Sample],
    fds_max: dict[str, int],
    connections: int,
    connections_max: int,
    cache_entries: int,
) -> IntervalRow:
    ordered = sorted(tally.seconds)
    return IntervalRow(
        number=number,
        ended=ended,
        statuses=dict(tally.by_status()),
        by_kind={kind.value: tally.of_kind(kind) for kind in Kind},
        unexpected=sum(tally.unexpected.values()),
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        processes={
            name: ProcessFigures(
                rss=figures.rss,
                private=figures.private or 0,
                private_of=figures.private_of,
                fds=figures.fds,
                fds_max=max(fds_max.get(name, 0), figures.fds),
                pids=figures.pids,
            )
            for name, figures in end.items()
        },
        connections=connections,
        connections_max=max(connections_max, connections),
        cache_entries=cache_entries,
    )


@dataclasses.dataclass
class Run:
    rows: list[IntervalRow]
    total: Tally
    writes: Writes


async def soak(stack: Stack, intervals: int, interval: float, every: float, mix: Mix) -> Run:
    """Load for `intervals` x `interval` seconds, sampled every `every` seconds; a row is
    printed as each interval ends."""
    recorder = Recorder()
    load = Load(stack, mix, recorder)
    probes = Probes(stack)
    bound = int(intervals * interval * 1000)  # per client: at most 1000 requests a second
    clients = asyncio.create_task(load.run(bound))
    started = time.monotonic()
    rows: list[IntervalRow] = []
    total = Tally()
    try:
        for number in range(1, intervals + 1):
            ends_at = started + number * interval
            fds_max: dict[str, int] = {}
            connections_max = 0
            while (left := ends_at - time.monotonic()) > 0:
                if clients.done():
                    clients.result()  # a client that crashed ends the soak with its error
                    raise RuntimeError("the load's clients stopped before the end")
                samples = await asyncio.to_thread(probes.processes)
                for name, figures in samples.items():
                    fds_max[name] = max(fds_max.get(name, 0), figures.fds)
                connections_max = max(
                    connections_max, await asyncio.to_thread(probes.server_connections)
                )
                await asyncio.sleep(min(every, max(0.0, ends_at - time.monotonic())))
                del left
            tally = recorder.cut()
            total.merge(tally)
            row = interval_row(
                number,
                time.monotonic() - started,
                tally,
                await asyncio.to_thread(probes.processes, True),
                fds_max,
                await asyncio.to_thread(probes.server_connections),
                connections_max,
                await asyncio.to_thread(probes.cache_entries),
            )
            rows.append(row)
            if number == 1:
                print(header(row), flush=True)
            print(line(row), flush=True)
    finally:
        load.stopping.set()
        try:
            await asyncio.wait_for(clients, STOP_GRACE)
        finally:
            probes.close()
    total.merge(recorder.cut())  # what the clients finished after the last interval
    return Run(rows, total, load.writes)


def audit(stack: Stack, writes: Writes) -> WriteAudit:
    """Each acknowledged write's unique email counted in the users table."""
    keys = list(writes.acknowledged)
    with stack.direct() as conn:
        found = {
            str(email): (int(str(count)), int(str(first)))
            for email, count, first in conn.execute(
                "SELECT email, count(*), min(id) FROM users WHERE email = ANY(%s) GROUP BY email",
                [[email_of(key) for key in keys]],
            ).fetchall()
        }
    rows = {key: found.get(email_of(key)) for key in keys}
    return WriteAudit(
        acknowledged=len(keys),
        missing=tuple(key for key, row in rows.items() if row is None),
        duplicated=tuple(key for key, row in rows.items() if row and row[0] > 1),
        wrong_id=tuple(
            key for key, row in rows.items() if row and row[1] != writes.acknowledged[key]
        ),
        given_up=tuple(writes.given_up),
    )


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./dev soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=positive, default=10.0, help="length (default 10)")
    parser.add_argument(
        "--interval-seconds", type=positive, default=60.0, help="one row per (default 60)"
    )
    parser.add_argument(
        "--sample-seconds", type=positive, default=1.0, help="fds/connections (default 1)"
    )
    parser.add_argument("--pool-size", type=int, default=10, help="the gateway's (default 10)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / ".local" / "soak",
        help="a run-<time> folder per run: logs, report.json (default .local/soak)",
    )
    parser.add_argument("--report", type=Path, help="the run's figures as JSON (default in it)")
    options = parser.parse_args(argv)
    intervals = round(options.minutes * 60 / options.interval_seconds)
    if intervals < 2:
        parser.error("the verdict compares intervals: --minutes must span at least 2 of them")
    if options.pool_size < GATEWAY_WORKERS:
        parser.error(f"--pool-size must be at least {GATEWAY_WORKERS} (one per gateway worker)")
    options.intervals = intervals
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    started = datetime.now(UTC)
    folder: Path = options.state_dir.resolve() / f"run-{started:%Y%m%d-%H%M%S}"
    report: Path = options.report or folder / "report.json"
    print(
        f"soak: {options.intervals} intervals of {options.interval_seconds:g} s from"
        f" {started:%Y-%m-%d %H:%M} UTC; logs in {folder}",
        flush=True,
    )
    with running_stack(folder, options.pool_size) as stack:
        print(
            f"soak: the Worker on the Pyodide host {stack.worker.url}, gateway {stack.gateway.url}"
            f" (--workers {GATEWAY_WORKERS}, --pool-size {stack.pool_size}, --cache"
            f" {stack.redis_url}), PostgreSQL in {stack.postgres.data_dir}",
            flush=True,
        )
        run = asyncio.run(
            soak(stack, options.intervals, options.interval_seconds, options.sample_seconds, Mix())
        )
        writes = audit(stack, run.writes)
    shutil.rmtree(folder / "postgres", ignore_errors=True)  # the logs stay
    verdict: Verdict = judge(
        run.rows, writes, options.pool_size, dict(run.total.unexpected), tuple(Kind)
    )
    print(summary(run.total, writes, verdict), flush=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "intervals": options.intervals,
                "interval_seconds": options.interval_seconds,
                "rows": [dataclasses.asdict(row) for row in run.rows],
                "totals": {
                    kind.value: {
                        str(status): n
                        for (k, status), n in sorted(run.total.statuses.items())
                        if k == kind
                    }
                    for kind in Kind
                },
                "cache_statuses": dict(run.total.cache_statuses),
                "unexpected": dict(run.total.unexpected),
                "writes": dataclasses.asdict(writes),
                "checks": [dataclasses.asdict(check) for check in verdict.checks],
                "passed": verdict.passed,
            },
            indent=2,
        )
    )
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
