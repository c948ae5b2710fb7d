"""Each replica's --pool-size and --max-connections are its own: replicas whose pools add
up to more than Postgres's max_connections. The replica whose connect Postgres refuses
answers 503 (Retry-After), and nothing else breaks: what the other replica holds goes on,
and once connections are free again both serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import postgres as devstack_postgres
from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_replicas import replica_redis, start_replica
from tests.support.services import GatewayFactory, make_app_url, start_postgres

# the app role may open max_connections - superuser_reserved_connections (3) of them
MAX_CONNECTIONS = 8
USABLE = MAX_CONNECTIONS - 3
POOL_SIZE = 4  # per replica: two replicas want 8, Postgres lets the app have 5
HEADERS = {"Neon-Connection-String": make_app_url()}


@pytest.fixture(scope="module")
def small_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    data_dir = tmp_path_factory.mktemp("small-pg")
    server = start_postgres(data_dir)
    with server.admin() as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    server.stop()
    server = devstack_postgres.start(data_dir, stop_at_exit=True)
    yield server
    server.stop()


@pytest.fixture
def small_gateways(small_postgres: EmbeddedPostgres, tmp_path: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(small_postgres, tmp_path)
    yield factory
    factory.stop_all()


def begin(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/transaction", json={"timeout_ms": 14000, "max_wait_ms": 500}, headers=HEADERS
    )


def test_replicas_wanting_more_than_max_connections_answer_503_and_nothing_else_breaks(
    small_gateways: GatewayFactory, small_postgres: EmbeddedPostgres, redis_url: str
) -> None:
    with small_postgres.admin() as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None and int(str(row[0])) == MAX_CONNECTIONS
    redis = replica_redis(redis_url)
    sizes = ("--pool-size", str(POOL_SIZE), "--max-connections", str(POOL_SIZE))
    first, second = (start_replica(small_gateways, redis, *sizes, workers=1) for _ in range(2))
    held = [begin(first.url) for _ in range(POOL_SIZE)]  # all of the first replica's pool
    assert [r.status_code for r in held] == [201] * POOL_SIZE
    taken = [begin(second.url) for _ in range(USABLE - POOL_SIZE)]
    assert [r.status_code for r in taken] == [201] * (USABLE - POOL_SIZE)
    refused = begin(second.url)  # its pool has room; Postgres has none left
    assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
    plain = httpx.post(f"{second.url}/sql", json={"query": "SELECT 1"}, headers=HEADERS)
    assert plain.status_code == 503
    # what both replicas hold goes on, and a call reaching the refusing replica is
    # forwarded to the holder as ever
    for reply in held + taken:
        transaction = reply.json()["id"]
        inside = {**HEADERS, "Poolgate-Transaction": transaction}
        ran = httpx.post(f"{second.url}/sql", json={"query": "SELECT 1 AS one"}, headers=inside)
        assert ran.status_code == 200, ran.text
        ended = httpx.post(f"{first.url}/transaction/{transaction}/commit", headers=HEADERS)
        assert ended.status_code == 200
    # connections given back: both serve again (the first keeps its idle ones pooled)
    for replica in (first, second):
        again = httpx.post(f"{replica.url}/sql", json={"query": "SELECT 2 AS two"}, headers=HEADERS)
        assert again.status_code == 200 and again.json()["rows"] == [{"two": 2}]
