"""The soak's printed table (a Markdown table, one row per interval, as the README keeps
it) and the closing summary."""

from __future__ import annotations

from bench.soak.load import Kind, Tally
from bench.soak.probes import POSTGRES
from bench.soak.verdict import IntervalRow, ProcessFigures, Verdict, WriteAudit


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}"


def process_cell(name: str, figures: ProcessFigures) -> str:
    if name == POSTGRES:
        return (
            f"{megabytes(figures.rss)} MB (backends' private"
            f" {megabytes(figures.private)} / {figures.private_of}),"
            f" {figures.fds} fds but files, {len(figures.pids)} procs"
        )
    return f"{megabytes(figures.rss)} MB, {figures.fds} fds"


def header(row: IntervalRow) -> str:
    names = " | ".join(row.processes)
    dashes = "|".join("---" for _ in range(7 + len(row.processes)))
    return (
        "| until | requests | by status | p50 ms | p99 ms | unexpected | "
        f"{names} | server connections | cache entries |\n|{dashes}|---|"
    )


def line(row: IntervalRow) -> str:
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(row.statuses.items()))
    cells = " | ".join(process_cell(name, figures) for name, figures in row.processes.items())
    return (
        f"| {clock(row.ended)} | {sum(row.statuses.values())} | {statuses} |"
        f" {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.unexpected} | {cells} |"
        f" {row.connections} (max {row.connections_max}) | {row.cache_entries} |"
    )


def summary(total: Tally, audit: WriteAudit, verdict: Verdict) -> str:
    lines = ["", "requests by kind:"]
    for kind in Kind:
        statuses = ", ".join(
            f"{status}: {n}" for (k, status), n in sorted(total.statuses.items()) if k == kind
        )
        lines.append(f"  {kind}: {total.of_kind(kind)} ({statuses or 'none'})")
    cache = ", ".join(f"{status}: {n}" for status, n in total.cache_statuses.most_common())
    lines.append(f"  cached reads' x-cache-status: {cache or 'none'}")
    lines.append(f"  keyed writes acknowledged: {audit.acknowledged}")
    lines += ["", "verdict:"]
    lines += [
        f"  {'PASS' if check.passed else 'FAIL'}  {check.rule}: {check.detail}"
        for check in verdict.checks
    ]
    failed = sum(not check.passed for check in verdict.checks)
    lines.append(
        f"soak: {'PASSED' if verdict.passed else 'FAILED'}"
        f" ({len(verdict.checks) - failed} of {len(verdict.checks)} checks passed)"
    )
    return "\n".join(lines)
