"""What forwarding a transaction's call to the replica holding it costs: sequential
latency (one client) of `SELECT 1` inside an interactive transaction, sent to the holder
itself and sent to another replica, which forwards it over HTTP.

Starts an embedded PostgreSQL, a redis-server and two replicas (`--workers 1`, plain
HTTP on loopback, an API key on), then measures each way in turn.

    uv run python bench/replica_hop.py [--requests 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support.services import (  # noqa: E402
    free_port,
    make_app_url,
    start_gateway,
    start_postgres,
    start_redis,
)

KEY = "bench-key-0123456789abcdef"
HEADERS = {"Neon-Connection-String": make_app_url(), "Authorization": f"Bearer {KEY}"}


def latencies_ms(client: httpx.Client, url: str, transaction: str, count: int) -> list[float]:
    took = []
    headers = {**HEADERS, "Poolgate-Transaction": transaction}
    for _ in range(count):
        started = time.perf_counter()
        reply = client.post(f"{url}/sql", json={"query": "SELECT 1 AS one"}, headers=headers)
        took.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, reply.text
    return took


def summary(took: list[float]) -> str:
    ordered = sorted(took)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    count = parser.parse_args().requests
    folder = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    postgres = start_postgres(folder / "pg")
    redis, redis_process = start_redis(folder)
    replicas = []
    try:
        for _ in range(2):
            port = free_port()
            options = ["--workers", "1", "--cache", redis, "--api-keys", KEY]
            options += ["--transaction-timeout-max", "600"]
            advertise = ("--advertise-url", f"http://127.0.0.1:{port}")
            replicas.append(
                start_gateway(postgres.upstream_url, folder, *options, *advertise, port=port)
            )
        holder, other = replicas
        with httpx.Client(timeout=30) as client:
            opened = client.post(
                f"{holder.url}/transaction", json={"timeout_ms": 600000}, headers=HEADERS
            )
            transaction = opened.json()["id"]
            latencies_ms(client, holder.url, transaction, 50)  # warm both ways
            latencies_ms(client, other.url, transaction, 50)
            direct = latencies_ms(client, holder.url, transaction, count)
            forwarded = latencies_ms(client, other.url, transaction, count)
            client.post(f"{holder.url}/transaction/{transaction}/rollback", headers=HEADERS)
        print(f"to the holder:       {summary(direct)}")
        print(f"forwarded to it:     {summary(forwarded)}")
    finally:
        for replica in replicas:
            replica.stop()
        redis_process.terminate()
        postgres.stop()


if __name__ == "__main__":
    main()
