"""The gateway next to PgBouncer, in one run, so that machine noise cancels in the ratios.

One embedded PostgreSQL with the app's schema and 10k users; every path runs the same
single-row `SELECT id, name, email FROM users WHERE id = $1` with a random id:

- pgbench straight to Postgres (unix socket) and through PgBouncer (Debian's
  `pgbouncer`, started here: transaction mode, the same pool size), `-M simple`;
- poolgate uncached and cached (`Poolgate-Cache-TTL`), driven by wrk over loopback;
- the Worker's `GET /users/{id}` on the CPython host, in front of that gateway;
- 1,000 concurrent clients on the gateway: statuses, server connections, memory.

Prints the table and every ratio issues 13 and 23 set a target for. `--variants` runs
several gateways in the same run, one after the other, so that levers are measured
before and after on the same noise: each `label=[DRIVER][@git:REF]` is the gateway from
this tree, or from `gateway/src` as commit REF has it, with `POOLGATE_DRIVER=DRIVER`
(which only trees from before 2026-12-05 read: psycopg, wire, asyncpg; the gateway's
driver is now its own), e.g. `psycopg=psycopg@git:12fb074,now=`; the first is the table's.

    uv run --group bench python bench/versus_pgbouncer.py [--seconds 10] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.wrk_scripts import sql_script  # noqa: E402
from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    ConnectionSampler,
    free_port,
    make_app_url,
    start_gateway,
    start_postgres,
    start_worker_server,
    terminate,
)

ROWS = 10_000
POOL_SIZE = 10
QUERY = "SELECT id, name, email FROM users WHERE id = $1"
PGBENCH_SCRIPT = f"\\set id random(1, {ROWS})\n" + QUERY.replace("$1", ":id") + ";\n"
GATEWAY_SCRIPT = sql_script(QUERY, ROWS)
WORKER_SCRIPT = """
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, ROWS))
end
""".replace("ROWS", str(ROWS))


@dataclass
class Point:
    rate: float  # requests or transactions per second
    p50_ms: float  # pgbench reports no percentiles: its average latency stands here
    p99_ms: float | None
    errors: int = 0

    def cell(self) -> str:
        errors = f", {self.errors} errors" if self.errors else ""
        if self.p99_ms is None:
            return f"{self.rate:,.0f}/s (avg {self.p50_ms:.2f} ms{errors})"
        return f"{self.rate:,.0f}/s (p50 {self.p50_ms:.2f}, p99 {self.p99_ms:.2f} ms{errors})"


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, clients: int, seconds: int, script: Path, env: dict[str, str]) -> Point:
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, clients)}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"Socket errors: (.*)", out)
    if failed:
        print(f"    wrk socket errors: {failed.group(1)}", flush=True)
    return Point(
        rate,
        _ms(*p50.groups()) if p50 else float("nan"),
        _ms(*p99.groups()) if p99 else None,
        int(errors.group(1)) if errors else 0,
    )


def run_pgbench(dsn_args: list[str], clients: int, seconds: int, script: Path) -> Point:
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "simple",
            "-c",
            str(clients),
            "-j",
            str(min(2, clients)),
            "-T",
            str(seconds),
            "-f",
            str(script),
            *dsn_args,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PGPASSWORD": APP_PASSWORD},
    ).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    average = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return Point(tps, average, None, int(failed.group(1)) if failed else 0)


def start_pgbouncer(folder: Path, socket_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    """PgBouncer refuses to run as root: it runs as the owner of Postgres's socket dir."""
    port = free_port()
    folder.mkdir()
    owner = Path(socket_dir).owner()
    shutil.chown(folder, owner)
    (folder / "userlist.txt").write_text(f'"{APP_USER}" "{APP_PASSWORD}"\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
{APP_DATABASE} = host={socket_dir} dbname={APP_DATABASE}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 2000
logfile = {folder / "pgbouncer.log"}
"""
    )
    process = subprocess.Popen(
        ["pgbouncer", *(["-u", owner] if os.geteuid() == 0 else []), str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                APP_USER,
                "-c",
                "SELECT 1",
                APP_DATABASE,
            ],
            capture_output=True,
            env={**os.environ, "PGPASSWORD": APP_PASSWORD},
        )
        if probe.returncode == 0:
            return process, port
        time.sleep(0.2)
    terminate(process)
    raise RuntimeError(f"pgbouncer did not start: {(folder / 'pgbouncer.log').read_text()}")


def family_peak_rss_mib(pid: int) -> float:
    """The supervisor's and every worker's own peak resident memory, added up."""
    total = 0
    for process in (pid, *(child.pid for child in psutil.Process(pid).children())):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


async def storm(url: str, clients: int, seconds: float) -> Counter[int]:
    """`clients` connections each sending requests back to back for `seconds`."""
    import aiohttp

    headers = {"Neon-Connection-String": make_app_url(), "Neon-Array-Mode": "true"}
    statuses: Counter[int] = Counter()
    stop_at = time.monotonic() + seconds

    async def one_client(session: aiohttp.ClientSession, number: int) -> None:
        while time.monotonic() < stop_at:
            body = {"query": QUERY, "params": [number % ROWS + 1]}
            try:
                async with session.post(url, json=body, headers=headers) as reply:
                    await reply.read()
                    statuses[reply.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1  # no HTTP answer at all

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one_client(session, n) for n in range(clients)))
    return statuses


def run_storm(
    postgres: object,
    folder: Path,
    gateway_options: list[str],
    clients: int,
    seconds: int,
    env: dict[str, str] | None = None,
) -> str:
    """A fresh gateway (no cache filled by earlier runs) under `clients` at once."""
    gateway = start_gateway(postgres.upstream_url, folder, *gateway_options, env=env)  # type: ignore[attr-defined]
    try:
        sampler = ConnectionSampler(postgres, APP_USER)  # type: ignore[arg-type]
        with sampler:
            statuses = asyncio.run(storm(f"{gateway.url}/sql", clients, seconds))
        peak = family_peak_rss_mib(gateway.process.pid)
    finally:
        gateway.stop()
    return (
        f"{clients} clients for {seconds} s on --pool-size {POOL_SIZE}:"
        f" statuses {dict(sorted(statuses.items()))}, at most {sampler.highest}"
        f" server connections, gateway processes' peak RSS {peak:.0f} MiB in all"
    )


def _variant(spec: str, folder: Path) -> tuple[str, dict[str, str]]:
    """(label, the gateway's environment) of one `label=DRIVER[@git:REF]`."""
    label, _, rest = spec.partition("=")
    driver, _, source = rest.partition("@")
    env = {"POOLGATE_DRIVER": driver} if driver else {}
    if source:
        if not source.startswith("git:"):
            raise SystemExit(f"--variants: {spec!r}: the source is git:REF")
        tree = folder / f"src-{label}"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", source[4:], "gateway/src"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        env["PYTHONPATH"] = str(tree / "gateway" / "src")  # ahead of the editable install
    return label, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--workers", default="", help="poolgate --workers (default: its own)")
    parser.add_argument("--storm", type=int, default=1000, help="clients in the storm")
    parser.add_argument(
        "--variants",
        default="poolgate=",
        help="comma-separated label=[DRIVER][@git:REF], each its own gateway (see above)",
    )
    parser.add_argument("--only", default="", help="comma-separated: pgbench,poolgate,worker")
    options = parser.parse_args()
    for tool in ("wrk", "pgbench", "pgbouncer", "psql"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install wrk pgbouncer postgresql-client")
    only = set(options.only.split(",")) if options.only else {"pgbench", "poolgate", "worker"}
    clients = [int(c) for c in options.clients.split(",")]
    seconds = options.seconds
    folder = Path(tempfile.mkdtemp(prefix="bench-versus-"))
    (folder / "select.sql").write_text(PGBENCH_SCRIPT)
    (folder / "gateway.lua").write_text(GATEWAY_SCRIPT)
    (folder / "worker.lua").write_text(WORKER_SCRIPT)
    (folder / "index.lua").write_text('wrk.headers["Accept"] = "application/json"\n')
    postgres = start_postgres(folder / "pg")
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
        conn.execute(
            "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'user ' || g"
            f" FROM generate_series(1, {ROWS}) g"
        )
        conn.execute("ANALYZE users")
    results: dict[str, dict[int, Point]] = {}

    def record(name: str, count: int, point: Point) -> None:
        results.setdefault(name, {})[count] = point
        print(f"{name:44s} c={count:<3d} {point.cell()}", flush=True)

    workers = ["--workers", options.workers] if options.workers else []
    gateway_options = ["--pool-size", str(POOL_SIZE), *workers]
    wrk_env = {"BENCH_CONNECTION_STRING": make_app_url()}
    storm_results: list[str] = []
    variants = [_variant(spec, folder) for spec in options.variants.split(",")]
    try:
        if "pgbench" in only:
            direct = ["-h", postgres.socket_dir, "-U", APP_USER, APP_DATABASE]
            for count in clients:
                record(
                    "pgbench, direct",
                    count,
                    run_pgbench(direct, count, seconds, folder / "select.sql"),
                )
            bouncer, port = start_pgbouncer(folder / "pgbouncer", postgres.socket_dir)
            try:
                pooled = ["-h", "127.0.0.1", "-p", str(port), "-U", APP_USER, APP_DATABASE]
                for count in clients:
                    point = run_pgbench(pooled, count, seconds, folder / "select.sql")
                    record("pgbench through PgBouncer", count, point)
            finally:
                terminate(bouncer)
        for index, (label, env) in enumerate(variants):
            suffix = "" if index == 0 else f" ({label})"
            gateway = start_gateway(postgres.upstream_url, folder, *gateway_options, env=env)
            try:
                url = f"{gateway.url}/sql"
                if "poolgate" in only:
                    for count in clients:
                        point = run_wrk(url, count, seconds, folder / "gateway.lua", wrk_env)
                        record("poolgate, uncached" + suffix, count, point)
                    cached_env = {**wrk_env, "BENCH_CACHE_TTL": "600"}
                    # fill: each worker has its own memory cache; 15 s of random ids give
                    # each about 9 requests per key, so nearly every key is cached in both
                    run_wrk(url, 16, max(15, seconds), folder / "gateway.lua", cached_env)
                    for count in clients:
                        point = run_wrk(url, count, seconds, folder / "gateway.lua", cached_env)
                        record("poolgate, cached" + suffix, count, point)
                if "worker" in only and not suffix:
                    dev_vars = folder / ".dev.vars"
                    dev_vars.write_text(
                        f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={url}\n"
                        "LOCAL_DEVELOPMENT=true\n"
                    )
                    worker = start_worker_server(dev_vars, folder / "worker.log", "cpython")
                    try:
                        for count in clients:
                            point = run_wrk(worker.url, count, seconds, folder / "worker.lua", {})
                            record("Worker GET /users/{id} (CPython host)", count, point)
                        # the Worker's own cost, no database: its index
                        point = run_wrk(f"{worker.url}/", 1, seconds, folder / "index.lua", {})
                        record("Worker GET / (no database)", 1, point)
                    finally:
                        worker.stop()
            finally:
                gateway.stop()
            if "poolgate" in only and options.storm:
                result = run_storm(postgres, folder, gateway_options, options.storm, seconds, env)
                storm_results.append(result + suffix)
                print(result + suffix, flush=True)
    finally:
        postgres.stop()
    report(results, clients, storm_results, options)


def report(
    results: dict[str, dict[int, Point]],
    clients: list[int],
    storm_results: list[str],
    options: object,
) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"\n{date.today()}, {os.cpu_count()} vCPUs ({cpu}), {options}\n")
    print("| path | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in clients) + " |")
    print("|---" * (len(clients) + 1) + "|")
    for name, points in results.items():
        cells = [points[c].cell() if c in points else "" for c in clients]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for storm_result in storm_results:
        print(f"\nStorm: {storm_result}")
    bouncer = results.get("pgbench through PgBouncer", {})
    worker = results.get("Worker GET /users/{id} (CPython host)", {})
    targets: list[tuple[str, float, str]] = []
    labels = [spec.partition("=")[0] for spec in str(getattr(options, "variants", "")).split(",")]
    for index, label in enumerate(labels):
        suffix = "" if index == 0 else f" ({label})"
        uncached = results.get("poolgate, uncached" + suffix, {})
        cached = results.get("poolgate, cached" + suffix, {})
        if 16 in bouncer and 16 in uncached:
            ratio = uncached[16].rate / bouncer[16].rate
            targets.append(("uncached / PgBouncer, 16 clients" + suffix, ratio, ">= 0.30"))
            p99 = uncached[16].p99_ms or 0.0
            targets.append(("uncached p99 ms, 16 clients" + suffix, p99, "<= 10"))
        if 64 in uncached and uncached[64].p99_ms is not None:
            spread = uncached[64].p99_ms / uncached[64].p50_ms
            targets.append(("uncached p99 / p50, 64 clients" + suffix, spread, "<= 4"))
        if 16 in bouncer and 16 in cached:
            ratio = cached[16].rate / bouncer[16].rate
            targets.append(("cached / PgBouncer, 16 clients" + suffix, ratio, ">= 0.60"))
        if 1 in worker and 1 in uncached and not suffix:
            added = worker[1].p50_ms / uncached[1].p50_ms - 1
            targets.append(("Worker p50 over the gateway's, 1 client", added, "<= 0.40"))
    print("\n| ratio | measured | target |\n|---|---|---|")
    for name, value, target in targets:
        print(f"| {name} | {value:.2f} | {target} |")


if __name__ == "__main__":
    main()
