"""The Worker's two local hosts side by side: cold start and per-request latency.

Starts an embedded PostgreSQL, a gateway (with an API key) and each host in turn, then
measures the time from launching the host to its first answer, and sequential request
latency (one client) for `GET /` (no database) and `GET /users/1` (one query through the
gateway), with the raw gateway call for the same query as the floor.

    uv run python bench/worker_hosts.py [--requests 300]
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

from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    make_app_url,
    start_gateway,
    start_postgres,
    start_worker_server,
)

KEY = "bench-key-0123456789abcdef"


def latencies_ms(client: httpx.Client, send: object, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        reply = send(client)  # type: ignore[operator]
        took.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, reply.text
    return took


def summary(took: list[float]) -> str:
    ordered = sorted(took)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    count = parser.parse_args().requests
    folder = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    postgres = start_postgres(folder / "pg")
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
    gateway = start_gateway(postgres.upstream_url, folder, "--api-keys", KEY)
    headers = {"Neon-Connection-String": make_app_url(), "Authorization": f"Bearer {KEY}"}
    with httpx.Client() as client:
        client.post(
            f"{gateway.url}/sql",
            json={"query": "INSERT INTO users (email, name) VALUES ('b@e.ch', 'B')"},
            headers=headers,
        )
        query = {"query": "SELECT * FROM users WHERE id = $1", "params": [1]}
        raw = latencies_ms(
            client, lambda c: c.post(f"{gateway.url}/sql", json=query, headers=headers), count
        )
    print(f"gateway POST /sql (the same query, no Worker): {summary(raw)}")
    dev_vars = folder / ".dev.vars"
    dev_vars.write_text(
        f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={gateway.url}/sql\n"
        f"DATABASE_API_KEY={KEY}\nLOCAL_DEVELOPMENT=true\n"
    )
    try:
        for host in ("cpython", "pyodide"):
            started = time.perf_counter()
            server = start_worker_server(dev_vars, folder / f"{host}.log", host)
            cold = time.perf_counter() - started
            try:
                with httpx.Client(base_url=server.url) as client:
                    index = latencies_ms(client, lambda c: c.get("/"), count)
                    user = latencies_ms(client, lambda c: c.get("/users/1"), count)
            finally:
                server.stop()
            print(
                f"{host:8} host: first answer {cold:.2f} s after launch;"
                f" GET / {summary(index)}; GET /users/1 {summary(user)}"
            )
    finally:
        gateway.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
