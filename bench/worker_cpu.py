"""The Worker's CPU per request on the Pyodide host, beside its wall-clock latency.

What Cloudflare bills and limits for a Worker is CPU time, so this is the Worker's
figure: the Node process's user + system time (read from /proc/PID/stat) over
`--requests` sequential requests after a warm-up, divided by their number. Deferred
work (`ctx.waitUntil`: the request log row) is included, since the bench waits for the
process to go idle before it reads the time again; the gateway's and Postgres's CPU are
not (other processes).

It also measures the parts, to split the figure:
- **host**: the same host with `--trivial host`, which builds the JS Request exactly as
  for the Worker and answers a fixed JSON Response without calling Python (Node's HTTP
  server, the Request and Response objects, the write): what workerd does not bill;
- **Pyodide**: with `--trivial python`, a Python handler that only returns a fixed JS
  Response, less the host: what entering Python costs per request (the call from JS,
  its asyncio task, the promise back), which any Python Worker pays in workerd too;
- **fetch**: Node's own `fetch` (undici) making the Worker's gateway calls (the same
  URL, headers and bodies), timed with `process.cpuUsage()` in a Node script of its
  own, per call, times the calls the gateway logged per request: the route's query and
  the request log INSERTs, of which there are fewer than requests when rows that
  arrive while one is written share the next (request_log); workerd's fetch is native
  code, not this JavaScript;
- **app**: what is left, the Worker's own Python (and the JS objects it makes).

Every host runs at once, each with a gateway of its own (so that its calls can be
counted in that gateway's log), and the requests go to them in turn, `--block` (50) to
one host before the next: the machine's noise (other processes on the same cores) falls
on all of them alike, and each still sees requests in a row, as one Worker would.
`--src DIR` (repeatable) serves another copy of `src/` beside this one, so that two trees
are compared in one run (e.g. `git archive main src | tar -x -C /tmp/before`); medians
of `--repeat` rounds are printed.

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
    Gateway,
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


@dataclass
class Host:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    gateway: Gateway

    def calls(self) -> int:
        return self.gateway.log_text().count('"path": "/sql"')

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_host(name: str, folder: Path, gateway: Gateway, src: Path, trivial: str | None) -> Host:
    port = free_port()
    dev_vars = folder / f".dev.vars-{port}"
    dev_vars.write_text(
        f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={gateway.url}/sql\n"
        f"DATABASE_API_KEY={KEY}\nLOCAL_DEVELOPMENT=true\n"
    )
    log = folder / f"host-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.pyodide_host",
                *("--dev-vars", str(dev_vars), "--port", str(port)),
                *("--config", str(folder / f"host-{port}.json"), "--src", str(src)),
                *(["--trivial", trivial] if trivial else []),
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."])},
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(process, f"{url}/", log, 180)
    return Host(name, url, process, gateway)  # the pid is Node's: pyodide_host execs it


def measure(hosts: list[Host], path: str, warmup: int, count: int, block: int) -> dict[str, Sample]:
    """`path` on every host in turn, `block` requests each, until each had `count`, after
    `warmup` each."""
    clients = {host.name: httpx.Client(base_url=host.url, timeout=30) for host in hosts}
    try:
        for _ in range(warmup):
            for host in hosts:
                clients[host.name].get(path)
        cpu = {host.name: wait_until_idle(host.process.pid) for host in hosts}
        calls = {host.name: host.calls() for host in hosts}
        took: dict[str, list[float]] = {host.name: [] for host in hosts}
        for _ in range(count // block):
            for host in hosts:
                client = clients[host.name]
                for _ in range(block):
                    started = time.perf_counter()
                    reply = client.get(path)
                    took[host.name].append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200, reply.text
        for host in hosts:  # deferred work (the request log rows) done
            cpu[host.name] = wait_until_idle(host.process.pid) - cpu[host.name]
    finally:
        for client in clients.values():
            client.close()
    samples = {}
    for host in hosts:
        ordered = sorted(took[host.name])
        samples[host.name] = Sample(
            cpu[host.name] * 1000 / len(took[host.name]),
            statistics.median(ordered),
            ordered[int(len(ordered) * 0.99) - 1],
            (host.calls() - calls[host.name]) / len(took[host.name]),  # written by now
        )
    return samples


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
    parser.add_argument("--block", type=int, default=50, help="requests to a host in a row")
    parser.add_argument("--src", type=Path, action="append", default=[])
    args = parser.parse_args()
    trees = [*(str(tree) for tree in args.src), "src"]
    folder = Path(tempfile.mkdtemp(prefix="bench-worker-cpu-"))
    postgres = start_postgres(folder / "pg")
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
    headers = {
        "Content-Type": "application/json",
        "Neon-Connection-String": make_app_url(),
        "Authorization": f"Bearer {KEY}",
        "Neon-Raw-Text-Output": "true",
        "Neon-Array-Mode": "true",
    }
    gateways: list[Gateway] = []
    hosts: list[Host] = []
    try:
        for name in [*trees, "trivial host", "trivial python"]:
            gateway = start_gateway(postgres.upstream_url, folder, "--api-keys", KEY)
            gateways.append(gateway)
            src = ROOT / "src" if name.startswith("trivial") or name == "src" else Path(name)
            trivial = name.removeprefix("trivial ") if name.startswith("trivial") else None
            hosts.append(start_host(name, folder, gateway, src, trivial))
        httpx.post(
            f"{gateways[0].url}/sql",
            json={"query": "INSERT INTO users (email, name) VALUES ('b@e.ch', 'B')"},
            headers=headers,
        ).raise_for_status()
        samples: dict[tuple[str, str], list[Sample]] = {}
        fetches: list[dict[str, float]] = []
        for repetition in range(args.repeat):
            for path in ROUTES:
                taken = measure(hosts, path, args.warmup, args.requests, args.block)
                for name, sample in taken.items():
                    samples.setdefault((name, path), []).append(sample)
            fetches.append(fetch_cpu_ms(gateways[0].url, headers, args.requests))
            print(f"round {repetition + 1} of {args.repeat} done", file=sys.stderr)
    finally:
        for host in hosts:
            host.stop()
        for gateway in gateways:
            gateway.stop()
        postgres.stop()

    def cell(name: str, path: str, figure: Callable[[Sample], float]) -> float:
        return median([figure(sample) for sample in samples[(name, path)]])

    per_call = {name: median([f[name] for f in fetches]) for name in fetches[0]}
    print(
        f"Pyodide host, {args.requests} sequential requests per host after {args.warmup}"
        f" warm-up, the hosts in turn {args.block} at a time; medians of {args.repeat} rounds"
    )
    print(
        "Node's fetch per call: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_call.items())
    )
    print(
        "| tree | route | CPU ms/request | host | Pyodide | gateway calls | Node fetch | app"
        " | wall p50 | wall p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in ROUTES:
        # the trivial hosts answered the same path, in the same turns
        host_ms = cell("trivial host", path, lambda s: s.cpu_ms)
        pyodide_ms = cell("trivial python", path, lambda s: s.cpu_ms) - host_ms
        for tree in trees:
            cpu = cell(tree, path, lambda s: s.cpu_ms)
            calls = cell(tree, path, lambda s: s.calls)
            queries = len(QUERIES[path])
            fetch = (per_call[path] if queries else 0.0) + (calls - queries) * per_call["log"]
            app = cpu - host_ms - pyodide_ms - fetch
            print(
                f"| {tree} | GET {path} | **{cpu:.2f}** | {host_ms:.2f} | {pyodide_ms:.2f} |"
                f" {calls:.2f} | {fetch:.2f} | {app:.2f} |"
                f" {cell(tree, path, lambda s: s.p50_ms):.2f} |"
                f" {cell(tree, path, lambda s: s.p99_ms):.2f} |"
            )


if __name__ == "__main__":
    main()
