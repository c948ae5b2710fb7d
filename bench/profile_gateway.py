"""py-spy over one gateway worker while wrk drives the bench's lookup at 16 clients.

    uv run --with py-spy python bench/profile_gateway.py [--seconds 10] [--cached]
    uv run --with py-spy python bench/profile_gateway.py --cached --ids 100 --fill 3  # hits

Prints the functions with the most samples (own and with callees), so that where the CPU
per request goes can be read without a flame graph viewer. Extra `--env NAME=VALUE`
pairs go to the gateway's environment.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.versus_pgbouncer import QUERY, ROWS, run_wrk  # noqa: E402
from bench.wrk_scripts import sql_script  # noqa: E402
from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    make_app_url,
    start_gateway,
    start_postgres,
)


def summarize(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"{samples} samples")
    print("\n-- own time --")
    for frame, count in own.most_common(top):
        print(f"{100 * count / samples:5.1f}%  {frame}")
    print("\n-- with callees --")
    for frame, count in total.most_common(top):
        print(f"{100 * count / samples:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cached", action="store_true")
    parser.add_argument("--fill", type=int, default=25, help="seconds of cache fill first")
    parser.add_argument("--ids", type=int, default=ROWS, help="distinct ids asked for")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--env", action="append", default=[])
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    (folder / "gateway.lua").write_text(sql_script(QUERY, options.ids))
    postgres = start_postgres(folder / "pg")
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
        conn.execute(
            "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'user ' || g"
            f" FROM generate_series(1, {ROWS}) g"
        )
    env = dict(pair.split("=", 1) for pair in options.env)
    gateway = start_gateway(
        postgres.upstream_url, folder, "--pool-size", "10", "--workers", "1", env=env
    )
    wrk_env = {"BENCH_CONNECTION_STRING": make_app_url()}
    if options.cached:
        wrk_env["BENCH_CACHE_TTL"] = "600"
    try:
        url = f"{gateway.url}/sql"
        fill = options.fill if options.cached else 3  # --ids 100 --fill 3: hits only
        run_wrk(url, options.clients, fill, folder / "gateway.lua", wrk_env)
        import psutil

        children = psutil.Process(gateway.process.pid).children()
        target = children[0].pid if children else gateway.process.pid
        collapsed = folder / "profile.txt"
        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(target),
                "-f",
                "raw",
                "-o",
                str(collapsed),
                "-d",
                str(options.seconds),
                "-r",
                "250",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        point = run_wrk(url, options.clients, options.seconds, folder / "gateway.lua", wrk_env)
        spy.wait()
        print(f"wrk under py-spy: {point.cell()}")
        # py-spy counts a thread that is runnable but preempted (Postgres woken by our
        # write, on the same core) as busy: the process's CPU time is the honest figure
        worker = psutil.Process(target)
        before = sum(worker.cpu_times()[:2])
        point = run_wrk(url, options.clients, options.seconds, folder / "gateway.lua", wrk_env)
        used = sum(worker.cpu_times()[:2]) - before
        requests = point.rate * options.seconds
        print(f"wrk alone: {point.cell()}; worker CPU {1e6 * used / requests:.0f} us/request")
        summarize(collapsed, options.top)
    finally:
        gateway.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
