"""The soak's verdict: rules over the interval rows and the audit of the writes, pure
(no processes), so each rule is tested on its own (tests/test_soak.py).

- **Memory**: each process's memory at the end of the last interval is at most
  `MEMORY_GROWTH_LIMIT` (10 %) above its memory at the end of the first interval. The
  first interval is the warm-up (heaps, caches and pools filling), so its end, not the
  start, is the baseline. Measured as RSS, except PostgreSQL: the resident memory of
  the private mappings of the app role's backends, per backend (see `MEASURE`).
- **File descriptors** and **server connections**: the count at the end of the last
  interval is at most the highest count sampled during the first interval, or, if it
  is above it, it rose no further during the second half of the run (no sample of the
  second half's intervals above the count at the end of the first half). The pools
  behind them (the Worker's fetch sockets, each gateway worker's Postgres and Redis
  connections) open a connection when concurrency first peaks that high and keep it,
  so the first interval opens with a burst and a pool fill (bench/soak/load.py); a pool
  may still step up once at a rarer peak and then stay (a 10-minute run: redis 19 fds
  in the first minute, 20 from the second to the tenth), while a leak keeps climbing.
  Server connections also never exceed the gateway's `--pool-size`. PostgreSQL's
  descriptors are counted without its relation files (bench/soak/probes.py says why).
- **Statuses**: no unexpected answer at all (bench/soak/load.py defines the expected
  ones per kind of request).
- **Writes**: every acknowledged keyed write is in the database exactly once, with the
  id it was acknowledged with; no write was given up.
- **Processes**: every gateway worker, the Worker's host, redis and the postmaster kept
  its pid (none died and was restarted).
- **Work**: every kind of request was sent and answered at least once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.soak.probes import POSTGRES

MEMORY_GROWTH_LIMIT = 0.10
# PostgreSQL's shared buffers are counted in the RSS of every backend that touched
# them (and in the USS of a backend that alone touched a page), so both grow as the
# soak's rows fill shared_buffers, a cache bounded by its setting; and the total grows
# by a backend's worth when the pool opens one more connection (bounded by
# --pool-size). A backend's leak shows in its private mappings (its heap), so
# PostgreSQL is measured as those of the backends serving the app role, per backend
# (bench/soak/probes.py own_memory); auxiliary processes (autovacuum workers come and
# go) are left out.
MEASURE = {POSTGRES: "private mappings per app backend"}


@dataclass(frozen=True)
class ProcessFigures:
    """One watched process (or group) over an interval."""

    rss: int  # bytes, at the interval's end
    private: int  # bytes in private mappings at the interval's end (PostgreSQL only)
    private_of: int  # the processes `private` covers (the app role's backends)
    fds: int  # at the interval's end
    fds_max: int  # the highest sample during the interval
    pids: tuple[int, ...]

    def memory(self, name: str) -> int:
        if MEASURE.get(name) == "private mappings per app backend":
            return self.private // max(1, self.private_of)
        return self.rss


@dataclass(frozen=True)
class IntervalRow:
    number: int
    ended: float  # seconds since the load started
    statuses: dict[int, int]
    by_kind: dict[str, int]
    unexpected: int
    p50_ms: float
    p99_ms: float
    processes: dict[str, ProcessFigures]
    connections: int  # the app role's, at the interval's end
    connections_max: int  # the highest sample during the interval
    cache_entries: int  # Redis DBSIZE at the interval's end


@dataclass(frozen=True)
class WriteAudit:
    acknowledged: int
    missing: tuple[str, ...] = ()
    duplicated: tuple[str, ...] = ()
    wrong_id: tuple[str, ...] = ()
    given_up: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def judge(
    rows: list[IntervalRow],
    writes: WriteAudit,
    pool_size: int,
    unexpected: dict[str, int],
    kinds: tuple[str, ...],
) -> Verdict:
    if len(rows) < 2:
        return Verdict([Check("at least two intervals", False, f"{len(rows)} interval(s)")])
    first, last = rows[0], rows[-1]
    checks = [
        *memory_checks(first, last),
        *descriptor_checks(rows),
        connection_check(rows, pool_size),
        status_check(unexpected),
        write_check(writes),
        *process_checks(rows),
        work_check(rows, kinds),
    ]
    return Verdict(checks)


def memory_checks(first: IntervalRow, last: IntervalRow) -> list[Check]:
    checks = []
    for name, start in first.processes.items():
        end = last.processes.get(name)
        if end is None:
            checks.append(Check(f"memory: {name}", False, "not measured in the last interval"))
            continue
        before, after = start.memory(name), end.memory(name)
        growth = (after - before) / before if before else float("inf")
        measure = MEASURE.get(name, "RSS")
        checks.append(
            Check(
                f"memory: {name}",
                growth <= MEMORY_GROWTH_LIMIT,
                f"{measure} {mb(before)} -> {mb(after)} ({growth:+.1%};"
                f" limit {MEMORY_GROWTH_LIMIT:+.0%})",
            )
        )
    return checks


def no_growth(rule: str, ends: list[int], highest: list[int]) -> Check:
    """The descriptor and connection rule over each interval's count at its end and
    its highest sample."""
    middle = len(ends) // 2
    if ends[-1] <= highest[0]:
        return Check(
            rule, True, f"{ends[-1]} at the end <= {highest[0]} (the first interval's highest)"
        )
    later = max(highest[middle:])
    stepped = later <= ends[middle - 1]
    return Check(
        rule,
        stepped,
        f"{ends[-1]} at the end > {highest[0]} (the first interval's highest);"
        f" {ends[middle - 1]} at the end of the first half, at most {later} since"
        + (": a step, not a climb" if stepped else ": still climbing"),
    )


def descriptor_checks(rows: list[IntervalRow]) -> list[Check]:
    checks = []
    for name in rows[0].processes:
        if any(name not in row.processes for row in rows):
            checks.append(Check(f"fds: {name}", False, "not measured in every interval"))
            continue
        figures = [row.processes[name] for row in rows]
        checks.append(
            no_growth(f"fds: {name}", [f.fds for f in figures], [f.fds_max for f in figures])
        )
    return checks


def connection_check(rows: list[IntervalRow], pool_size: int) -> Check:
    highest = max(row.connections_max for row in rows)
    growth = no_growth(
        "server connections",
        [row.connections for row in rows],
        [row.connections_max for row in rows],
    )
    return Check(
        growth.rule,
        growth.passed and highest <= pool_size,
        f"{growth.detail}; highest ever {highest} <= --pool-size {pool_size}",
    )


def status_check(unexpected: dict[str, int]) -> Check:
    """`unexpected`: every unexpected answer of the run (the requests still finishing
    after the last interval included), by kind and what came back."""
    count = sum(unexpected.values())
    shown = "; ".join(f"{n} x {what}" for what, n in list(unexpected.items())[:5])
    return Check(
        "no unexpected status", count == 0, f"{count} unexpected" + (f": {shown}" if shown else "")
    )


def write_check(audit: WriteAudit) -> Check:
    problems = {
        "missing": audit.missing,
        "more than once": audit.duplicated,
        "with another id": audit.wrong_id,
        "given up": audit.given_up,
    }
    wrong = {what: keys for what, keys in problems.items() if keys}
    detail = f"{audit.acknowledged} acknowledged, each in the database exactly once"
    if wrong:
        detail = f"{audit.acknowledged} acknowledged; " + "; ".join(
            f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in wrong.items()
        )
    return Check("acknowledged writes", audit.acknowledged > 0 and not wrong, detail)


def process_checks(rows: list[IntervalRow]) -> list[Check]:
    checks = []
    for name, start in rows[0].processes.items():
        if name == POSTGRES:  # backends come and go with the pool; the postmaster stays
            stayed = all(row.processes[name].pids[:1] == start.pids[:1] for row in rows)
        else:
            stayed = all(row.processes.get(name, start).pids == start.pids for row in rows)
        if not stayed:
            seen = sorted({pid for row in rows for pid in row.processes[name].pids[:1]})
            checks.append(Check(f"process kept: {name}", False, f"pids seen {seen}"))
    count = {len(row.processes) for row in rows}
    if len(count) > 1:
        checks.append(Check("processes kept", False, f"watched groups per interval: {count}"))
    if not checks:
        checks.append(Check("processes kept", True, "every watched process kept its pid"))
    return checks


def work_check(rows: list[IntervalRow], kinds: tuple[str, ...]) -> Check:
    totals = {kind: sum(row.by_kind.get(kind, 0) for row in rows) for kind in kinds}
    return Check(
        "every kind of request sent",
        all(totals.values()),
        ", ".join(f"{kind} {n}" for kind, n in totals.items()),
    )
