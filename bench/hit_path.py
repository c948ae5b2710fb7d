"""A cache hit's cost against aiohttp's own and the event loop's floor, under wrk (issue 23).

    uv run python bench/hit_path.py [--seconds 8] [--rounds 3] [--clients 16]
        [--variants before=psycopg@git:main,after=psycopg]

Every target is one process on one core, sent the same request (bench/wrk_scripts.py's
lookup with `Poolgate-Cache-TTL: 600`, ids 1-100, so every request after the fill is a
hit) by `wrk -t2 -cN`; each is measured as requests/s and as the process's own user +
system CPU time per request (from /proc), in turns (every target once per round), so
the machine's noise falls on all alike:

- `floor`: a uvloop `asyncio.Protocol` that answers each request with fixed bytes (the
  syscalls and the loop, no HTTP framework);
- `aiohttp`: aiohttp's low-level server as `serving.serve` configures it (the same
  `JsonErrorServer`, handler cancellation on, no access log), whose handler takes the
  body and answers a hit's headers and body, fixed;
- each `--variants` entry: the gateway (`--workers 1`, `--pool-size 10`), from this tree
  or from `gateway/src` at a git ref (see bench/versus_pgbouncer.py's `--variants`).

So gateway - aiohttp is what the gateway's own code costs per hit, and aiohttp - floor
is aiohttp's request parse, objects and response write.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.versus_pgbouncer import QUERY, _variant, run_wrk  # noqa: E402
from bench.wrk_scripts import sql_script  # noqa: E402
from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    free_port,
    make_app_url,
    start_gateway,
    start_postgres,
    terminate,
    wait_until_answering,
)

IDS = 100
# what a hit answers (its headers but the request id, and a body of the bench's size)
HIT_BODY = (
    b'{"command":"SELECT","fields":[{"name":"id","dataTypeID":23,"tableID":16390,'
    b'"columnID":1,"dataTypeSize":4,"dataTypeModifier":-1,"format":"text"},{"name":"name",'
    b'"dataTypeID":25,"tableID":16390,"columnID":3,"dataTypeSize":-1,"dataTypeModifier":-1,'
    b'"format":"text"},{"name":"email","dataTypeID":25,"tableID":16390,"columnID":2,'
    b'"dataTypeSize":-1,"dataTypeModifier":-1,"format":"text"}],"rowCount":1,'
    b'"rows":[["42","user 42","u42@example.com"]],"rowAsArray":true}'
)

_AIOHTTP_SERVER = """
import asyncio, sys, uvloop
from aiohttp import web
from poolgate.faces.neon_http.json_server import JsonErrorServer
BODY = %r
async def handle(request):
    if request.path == "/healthz":
        return web.Response(text="{}", content_type="application/json")
    request.content.read_nowait()
    return web.Response(body=BODY, content_type="application/json", headers={
        "Poolgate-Cache-Status": "ttl", "Age": "3",
        "Neon-Request-Id": "6f1f8a52-5b1e-4c7e-9b7e-2f0c1d9a8e31",
        "Access-Control-Allow-Origin": "*"})
async def main():
    server = JsonErrorServer(handle, answer_parse_error=lambda exc: web.Response(status=400),
                             handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]), backlog=1024).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""

_FLOOR_SERVER = """
import asyncio, sys, uvloop
BODY = %r
ANSWER = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
          + str(len(BODY)).encode() + b"\\r\\nPoolgate-Cache-Status: ttl\\r\\nAge: 3\\r\\n"
          b"Neon-Request-Id: 6f1f8a52-5b1e-4c7e-9b7e-2f0c1d9a8e31\\r\\n"
          b"Access-Control-Allow-Origin: *\\r\\n\\r\\n" + BODY)
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\\r\\n\\r\\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\\r\\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(ANSWER)
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(Answer, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await asyncio.Event().wait()
uvloop.run(main())
"""


class Target:
    def __init__(self, name: str, url: str, pid: int, stop: object) -> None:
        self.name, self.url, self.pid, self.stop = name, url, pid, stop
        self.rates: list[float] = []
        self.micros: list[float] = []


def start_script(name: str, source: str, folder: Path) -> Target:
    port = free_port()
    script = folder / f"server_{name}.py"
    script.write_text(source % (HIT_BODY,))
    log_path = folder / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(script), str(port)], stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    if name == "aiohttp":
        wait_until_answering(process, f"{url}/healthz", log_path, 20, True)
    else:
        time.sleep(1.5)
    return Target(name, f"{url}/sql", process.pid, lambda: terminate(process))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--variants", default="gateway=psycopg")
    parser.add_argument("--no-baselines", action="store_true")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-hit-path-"))
    script = folder / "hit.lua"
    script.write_text(sql_script(QUERY, IDS))
    wrk_env = {"BENCH_CONNECTION_STRING": make_app_url(), "BENCH_CACHE_TTL": "600"}
    postgres = start_postgres(folder / "pg")
    targets: list[Target] = []
    try:
        apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
        with postgres.admin(APP_DATABASE) as conn:
            conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
            conn.execute(
                "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'user ' || g"
                f" FROM generate_series(1, {IDS}) g"
            )
        if not options.no_baselines:
            targets.append(start_script("floor", _FLOOR_SERVER, folder))
            targets.append(start_script("aiohttp", _AIOHTTP_SERVER, folder))
        for spec in options.variants.split(","):
            label, env = _variant(spec, folder)
            gateway = start_gateway(
                postgres.upstream_url, folder, "--pool-size", "10", "--workers", "1", env=env
            )
            children = psutil.Process(gateway.process.pid).children()
            pid = children[0].pid if children else gateway.process.pid
            target = Target(label, f"{gateway.url}/sql", pid, gateway.stop)
            run_wrk(target.url, options.clients, 3, script, wrk_env)  # fill: 100 ids
            targets.append(target)
        for target in targets:  # warm-up
            run_wrk(target.url, options.clients, 2, script, wrk_env)
        for round_ in range(options.rounds):
            for target in targets:
                process = psutil.Process(target.pid)
                before = sum(process.cpu_times()[:2])
                point = run_wrk(target.url, options.clients, options.seconds, script, wrk_env)
                used = sum(process.cpu_times()[:2]) - before
                micros = 1e6 * used / (point.rate * options.seconds)
                target.rates.append(point.rate)
                target.micros.append(micros)
                print(
                    f"round {round_ + 1} {target.name:10s} {point.cell()}"
                    f"  {micros:6.1f} us CPU/request"
                    + (f" ({point.errors} non-2xx)" if point.errors else ""),
                    flush=True,
                )
        print(f"\nmedians of {options.rounds} rounds, {options.clients} clients, one process each:")
        for target in targets:
            print(
                f"  {target.name:10s} {statistics.median(target.rates):9,.0f} req/s"
                f"  {statistics.median(target.micros):6.1f} us CPU/request"
            )
    finally:
        for target in targets:
            target.stop()  # type: ignore[operator]
        postgres.stop()


if __name__ == "__main__":
    main()
