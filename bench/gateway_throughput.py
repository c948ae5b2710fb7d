"""Throughput of the gateway, and of the stacks it was chosen over, at 1/16/64 clients.

Single-row `SELECT ... WHERE id = $1` on a 10k-row table, the same workload as
shared/BASELINES.md, driven by wrk over loopback against an embedded PostgreSQL.
Run on demand (a few minutes):  uv run --group bench python bench/gateway_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wrk_scripts import sql_script  # noqa: E402
from devstack import postgres as embedded  # noqa: E402

USER, PASSWORD, DATABASE = "bench", "bench-password", "bench"
QUERY = "SELECT id, name, email FROM bench_users WHERE id = $1"
WRK_SCRIPT = sql_script(QUERY, 10_000)


def prepare_database(data_dir: Path) -> embedded.EmbeddedPostgres:
    postgres = embedded.start(data_dir, stop_at_exit=True)
    embedded.ensure_role_and_database(postgres, USER, PASSWORD, DATABASE)
    with postgres.admin(DATABASE) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_users")
        conn.execute("CREATE TABLE bench_users (id int PRIMARY KEY, name text, email text)")
        conn.execute(
            "INSERT INTO bench_users SELECT g, 'user ' || g, 'u' || g || '@example.com'"
            " FROM generate_series(1, 10000) g"
        )
        conn.execute("ALTER TABLE bench_users OWNER TO bench")
        conn.execute("ANALYZE bench_users")
    return postgres


def start(args: list[str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(
                url,
                json={"query": "SELECT 1", "params": []},
                timeout=1,
                headers={"Neon-Connection-String": CONNECTION_STRING},
            )
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{args} did not start")


def run_wrk(
    url: str, connections: int, seconds: int, script: Path, extra_env: dict[str, str]
) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_CONNECTION_STRING": CONNECTION_STRING, **extra_env},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    return {"rps": rps, "errors": int(errors.group(1)) if errors else 0, "p99_ms": p99_ms}


CONNECTION_STRING = f"postgresql://{USER}:{quote(PASSWORD)}@localhost/{DATABASE}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--only", default="", help="comma-separated subset of stack names")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    clients = [int(c) for c in options.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    script = work / "sql.lua"
    script.write_text(WRK_SCRIPT)
    postgres = prepare_database(work / "pg")
    dsn = f"postgresql://{USER}:{quote(PASSWORD)}@/{DATABASE}?host={quote(postgres.socket_dir)}"
    python = sys.executable
    gateway = [
        python,
        "-m",
        "poolgate.cli",
        "serve",
        "--upstream",
        postgres.upstream_url,
        "--pool-size",
        "10",
        *("--drain-seconds", "0"),
    ]
    stacks = {
        "poolgate (aiohttp + psycopg, full protocol, DISCARD ALL reset)": gateway,
        "poolgate, --reset-query none": [*gateway, "--reset-query", "none"],
        "poolgate, cached reads (Poolgate-Cache-TTL: 600, 10k keys)": [*gateway],
        "minimal aiohttp + asyncpg": [python, "bench/stacks.py", "aiohttp_asyncpg"],
        "minimal aiohttp + psycopg": [python, "bench/stacks.py", "aiohttp_psycopg"],
        "minimal uvicorn/starlette + psycopg": [python, "bench/stacks.py", "starlette_psycopg"],
    }
    if options.only:
        wanted = options.only.split(",")
        stacks = {k: v for k, v in stacks.items() if any(w in k for w in wanted)}
    results: dict[str, dict[int, dict[str, float]]] = {}
    port = 4600
    try:
        for name, command in stacks.items():
            port += 1
            if command[1] == "bench/stacks.py":
                args = [*command, str(port), dsn]
            else:
                args = [*command, "--listen", f"127.0.0.1:{port}"]
            url = f"http://127.0.0.1:{port}/sql"
            process = start(args, url)
            try:
                results[name] = {}
                for count in clients:
                    extra = {"BENCH_CACHE_TTL": "600"} if "cached" in name else {}
                    runs = [
                        run_wrk(url, count, options.seconds, script, extra)
                        for _ in range(options.passes)
                    ]
                    results[name][count] = {
                        "rps": statistics.median(r["rps"] for r in runs),
                        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                        "errors": sum(r["errors"] for r in runs),
                    }
                    print(f"{name:60s} c={count:<3d} {results[name][count]}", flush=True)
                rss = psutil.Process(process.pid).memory_info().rss / 2**20
                results[name][0] = {"rss_mib": round(rss, 1)}
            finally:
                process.terminate()
                process.wait(timeout=15)
    finally:
        postgres.stop()
    print()
    header = "| stack | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in clients)
    print(header + " | RSS after |")
    print("|---" * (len(clients) + 2) + "|")
    for name, by_clients in results.items():
        cells = [
            f"{by_clients[c]['rps']:.0f} req/s (p99 {by_clients[c]['p99_ms']:.1f} ms)"
            + (f", {by_clients[c]['errors']:.0f} errors" if by_clients[c]["errors"] else "")
            for c in clients
        ]
        print(f"| {name} | " + " | ".join(cells) + f" | {by_clients[0]['rss_mib']} MiB |")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
