"""The Worker's CPU per request on the Pyodide host, beside its wall-clock latency.

What Cloudflare bills and limits for a Worker is CPU time, so this is the Worker's
figure: the Node process's user + system time (read from /proc/PID/stat) over
`--requests` sequential requests after a warm-up, divided by their number. Deferred
work (`ctx.waitUntil`: the request log row) is included, since the bench waits for the
process to go idle before it reads the time again; the gateway's and Postgres's CPU are
not (other processes).

It also measures what workerd would not bill, to split the figure:
- **host**: the same host with `--trivial host`, which builds the JS Request exactly as
  for the Worker and answers a fixed JSON Response without calling Python (Node's HTTP
  server, the Request and Response objects, the write);
- **Pyodide**: with `--trivial python`, a Python handler that only returns a fixed JS
  Response, less the host: what entering Python costs per request (the call from JS,
  its asyncio task, the promise back), which any Python Worker pays in workerd too;
- **fetch**: Node's own `fetch` (undici) making the Worker's gateway calls (the same
  URL, headers and bodies), timed with `process.cpuUsage()` in a Node script of its
  own, per call, times the calls the gateway logged per request: the route's query and
  the request log INSERTs, of which there are fewer than requests when rows that
  arrive while one is written share the next (request_log);
- **app**: what is left, the Worker's own Python (and the JS objects it makes).

`--src DIR` (repeatable) serves another copy of `src/` too, so that two trees are
compared in one run and one machine state (e.g. `git archive main src | tar -x -C
/tmp/before`); every tree is measured `--repeat` times, interleaved, and the medians
printed.

    uv run python bench/worker_cpu.py [--requests 300] [--repeat 3] [--src /tmp/before/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from devstack import node_toolchain  # noqa: E402
from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    free_port,
    make_app_url,
    start_gateway,
    start_postgres,
    wait_until_answering,
)

KEY = "bench-key-0123456789abcdef"
ROUTES = ("/", "/users/1", "/health")
TICKS = os.sysconf("SC_CLK_TCK")
# The Worker's gateway calls, as db.client sends them: each route's own query, and the
# request log's INSERT (request_log.INSERT_ROWS) of one row.
LOG_INSERT = {
    "query": "INSERT INTO logs (level, message, meta) SELECT r->>'level', r->>'message',"
    " r->'meta' FROM jsonb_array_elements($1::jsonb) AS r",
    "params": [
        '[{"level": "info", "message": "GET / 200", "meta": {"method": "GET", "path": "/",'
        ' "status": 200, "duration_ms": 0.5, "request_id": "0f8e2b9c-1d2a-4c1e-9a41-'
        '2f3c4d5e6f70"}}]'
    ],
}
QUERIES: dict[str, list[dict[str, object]]] = {
    "/": [],
    "/users/1": [
        {
            "query": "SELECT id, email, name, created_at, updated_at FROM users WHERE id = $1",
            "params": [1],
        }
    ],
    "/health": [{"query": "SELECT 1 AS ok, now() AS database_time", "params": []}],
}
FETCH_SCRIPT = """
const [url, headers, bodies, warmup, count] = JSON.parse(process.argv[1]);
async function one(body) {
  const reply = await fetch(url, { method: "POST", headers, body });
  if (reply.status !== 200) throw new Error(`${reply.status} ${await reply.text()}`);
  await reply.arrayBuffer();
}
const perCall = [];
for (const body of bodies) {
  for (let i = 0; i < warmup; i++) await one(body);
  const before = process.cpuUsage();
  for (let i = 0; i < count; i++) await one(body);
  const used = process.cpuUsage(before);
  perCall.push((used.user + used.system) / 1000 / count);
}
console.log(JSON.stringify(perCall));
"""


def process_cpu_seconds(pid: int) -> float:
    """User + system time of every thread of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def wait_until_idle(pid: int, quiet: float = 0.3, longest: float = 10.0) -> float:
    """The process's CPU time once it used none over `quiet` seconds (its deferred work
    done)."""
    deadline = time.monotonic() + longest
    last = process_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = process_cpu_seconds(pid)
        if now - last <= 1 / TICKS:
            return now
        last = now
    return last


@dataclass
class Sample:
    cpu_ms: float  # per request
    p50_ms: float
    p99_ms: float
    calls: float  # gateway calls per request


def gateway_calls(log_path: Path) -> int:
    return log_path.read_text().count('"path": "/sql"')


def measure(
    client: httpx.Client,
    pid: int,
    path: str,
    counts: tuple[int, int],
    idle_ms: float,
    gateway_log: Path,
) -> Sample:
    warmup, count = counts
    for _ in range(warmup):
        client.get(path)
    before = wait_until_idle(pid)
    calls_before = gateway_calls(gateway_log)
    idle_started = time.monotonic()
    took = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.get(path)
        took.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, reply.text
    after = wait_until_idle(pid)
    # what the process uses doing nothing (timers), over the same span, is not the
    # requests' (wait_until_idle's quiet spell included)
    idle = idle_ms * (time.monotonic() - idle_started)
    calls = gateway_calls(gateway_log) - calls_before  # its lines are written by now
    ordered = sorted(took)
    return Sample(
        max(0.0, ((after - before) * 1000 - idle) / count),
        statistics.median(ordered),
        ordered[int(len(ordered) * 0.99) - 1],
        calls / count,
    )


@dataclass
class Host:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_host(dev_vars: Path, folder: Path, src: Path, trivial: str | None) -> Host:
    port = free_port()
    name = f"host-{port}"
    with (folder / f"{name}.log").open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.pyodide_host",
                *("--dev-vars", str(dev_vars), "--port", str(port)),
                *("--config", str(folder / f"{name}.json"), "--src", str(src)),
                *(["--trivial", trivial] if trivial else []),
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."])},
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(process, f"{url}/", folder / f"{name}.log", 120)
    return Host(url, process)  # the pid is Node's: pyodide_host execs it


def idle_rate_ms(pid: int, seconds: float = 2.0) -> float:
    """CPU ms per second the idle process uses."""
    before = wait_until_idle(pid)
    time.sleep(seconds)
    return (process_cpu_seconds(pid) - before) * 1000 / seconds


def fetch_cpu_ms(gateway_url: str, headers: dict[str, str], count: int) -> dict[str, float]:
    """Node's fetch per call: each route's query, and a request log INSERT ("log")."""
    names = [path for path in ROUTES if QUERIES[path]] + ["log"]
    bodies = [json.dumps(QUERIES[name][0] if name != "log" else LOG_INSERT) for name in names]
    argument = json.dumps([f"{gateway_url}/sql", headers, bodies, 50, count])
    done = subprocess.run(
        [node_toolchain.node(), "--input-type=module", "-e", FETCH_SCRIPT, argument],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return dict(zip(names, json.loads(done.stdout), strict=True))


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--src", type=Path, action="append", default=[])
    args = parser.parse_args()
    trees = [*args.src, ROOT / "src"]
    folder = Path(tempfile.mkdtemp(prefix="bench-worker-cpu-"))
    postgres = start_postgres(folder / "pg")
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
    gateway = start_gateway(postgres.upstream_url, folder, "--api-keys", KEY)
    headers = {
        "Content-Type": "application/json",
        "Neon-Connection-String": make_app_url(),
        "Authorization": f"Bearer {KEY}",
        "Neon-Raw-Text-Output": "true",
        "Neon-Array-Mode": "true",
    }
    httpx.post(
        f"{gateway.url}/sql",
        json={"query": "INSERT INTO users (email, name) VALUES ('b@e.ch', 'B')"},
        headers=headers,
    ).raise_for_status()
    dev_vars = folder / ".dev.vars"
    dev_vars.write_text(
        f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={gateway.url}/sql\n"
        f"DATABASE_API_KEY={KEY}\nLOCAL_DEVELOPMENT=true\n"
    )
    samples: dict[tuple[str, str], list[Sample]] = {}
    trivial: dict[str, list[Sample]] = {"host": [], "python": []}
    fetches: list[dict[str, float]] = []
    idles: list[float] = []

    def run(name: str, src: Path, answer: str | None, paths: tuple[str, ...]) -> None:
        host = start_host(dev_vars, folder, src, answer)
        try:
            pid = host.process.pid
            idle = idle_rate_ms(pid)
            idles.append(idle)
            with httpx.Client(base_url=host.url) as client:
                for path in paths:
                    sample = measure(
                        client,
                        pid,
                        path,
                        (args.warmup, args.requests),
                        idle / 1000,
                        gateway.log_path,
                    )
                    found = trivial[answer] if answer else samples.setdefault((name, path), [])
                    found.append(sample)
        finally:
            host.stop()

    try:
        for repetition in range(args.repeat):
            for tree in trees:
                run(str(tree), tree, None, ROUTES)
            for answer in trivial:
                run(answer, ROOT / "src", answer, ("/",))
            fetches.append(fetch_cpu_ms(gateway.url, headers, args.requests))
            print(f"repetition {repetition + 1} of {args.repeat} done", file=sys.stderr)
    finally:
        gateway.stop()
        postgres.stop()

    def cell(found: list[Sample], figure: Callable[[Sample], float]) -> float:
        return median([figure(sample) for sample in found])

    host_ms = cell(trivial["host"], lambda s: s.cpu_ms)
    pyodide_ms = cell(trivial["python"], lambda s: s.cpu_ms) - host_ms
    per_call = {name: median([f[name] for f in fetches]) for name in fetches[0]}
    print(
        f"Pyodide host, {args.requests} sequential requests after {args.warmup} warm-up,"
        f" medians of {args.repeat}; idle Node {median(idles):.2f} ms/s subtracted"
    )
    print(f"host only (Node's HTTP handling, no Python): {host_ms:.2f} ms CPU per request")
    print(f"Pyodide's own (a trivial Python handler, less the host): {pyodide_ms:.2f} ms")
    print(
        "Node's fetch per call: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_call.items())
    )
    print(
        "| tree | route | CPU ms/request | host | Pyodide | gateway calls | Node fetch | app"
        " | wall p50 | wall p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tree in trees:
        for path in ROUTES:
            found = samples[(str(tree), path)]
            cpu = cell(found, lambda s: s.cpu_ms)
            calls = cell(found, lambda s: s.calls)
            queries = len(QUERIES[path])
            fetch = (per_call[path] if queries else 0.0) + (calls - queries) * per_call["log"]
            app = cpu - host_ms - pyodide_ms - fetch
            print(
                f"| {tree} | GET {path} | **{cpu:.2f}** | {host_ms:.2f} | {pyodide_ms:.2f} |"
                f" {calls:.2f} | {fetch:.2f} | {app:.2f} |"
                f" {cell(found, lambda s: s.p50_ms):.2f} | {cell(found, lambda s: s.p99_ms):.2f} |"
            )


if __name__ == "__main__":
    main()
