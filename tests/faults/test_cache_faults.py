"""Redis, the shared cache store, restarted under cached read load interleaved with
writes: never a stale read after a write's 200."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.faults.conftest import FaultPostgres, FaultReport, FaultRow, scaled
from tests.support.services import GatewayFactory, make_app_url, start_redis

HEADERS = {"Neon-Connection-String": make_app_url(), "Neon-Array-Mode": "true"}


def test_redis_restarted_under_cached_load_serves_no_stale_read_after_a_write(
    fault_gateways: GatewayFactory,
    fault_postgres: FaultPostgres,
    report: FaultReport,
    tmp_path: Path,
) -> None:
    with fault_postgres.server.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS cache_probe")
        conn.execute("CREATE TABLE cache_probe (id int PRIMARY KEY, value int NOT NULL)")
        conn.execute("INSERT INTO cache_probe VALUES (1, 0)")
        conn.execute("ALTER TABLE cache_probe OWNER TO app")
    url, redis = start_redis(tmp_path)
    port = urlsplit(url).port
    gateway = fault_gateways("--cache", url)
    rounds = scaled(60, 300)
    restarts = scaled(1, 3)
    down_at = {rounds * (n + 1) // (restarts + 1) for n in range(restarts)}
    up_at = {value + 3 for value in down_at}  # three rounds with Redis down
    stale = 0
    statuses: dict[str, int] = {}
    try:
        with httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=30) as client:
            for value in range(1, rounds + 1):
                if value in down_at:
                    redis.terminate()
                    redis.wait(timeout=10)
                if value in up_at:
                    _, redis = start_redis(tmp_path, port)
                write = client.post(
                    "/sql",
                    json={
                        "query": "UPDATE cache_probe SET value = $1 WHERE id = 1",
                        "params": [value],
                    },
                    headers={"Poolgate-Invalidate-Tags": "probe"},
                )
                assert write.status_code == 200, write.text
                for _ in range(3):  # the first read may fill the cache, the next hit it
                    read = client.post(
                        "/sql",
                        json={"query": "SELECT value FROM cache_probe WHERE id = 1"},
                        headers={"Poolgate-Cache-TTL": "60", "Poolgate-Cache-Tags": "probe"},
                    )
                    assert read.status_code == 200, read.text
                    status = read.headers["Poolgate-Cache-Status"]
                    statuses[status] = statuses.get(status, 0) + 1
                    stale += read.json()["rows"] != [[value]]
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    assert stale == 0
    assert statuses.get("ttl", 0) > 0  # the cache was really in use
    report.add(
        FaultRow(
            "Redis (shared cache) restarted under cached reads interleaved with writes",
            injected=restarts,
            survived=restarts,
            notes=f"{rounds} writes each followed by 3 cached reads (3 rounds per restart with"
            f" Redis down): {stale} stale; read statuses {statuses}",
        )
    )
