"""The pool's bound, reuse, discard, cancellation and expiry, observed in pg_stat_activity."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    ConnectionSampler,
    GatewayFactory,
    server_connections,
    wait_until_not_running,
)
from tests.support.sql import post_sql


def make_role(postgres: EmbeddedPostgres, name: str) -> str:
    with postgres.admin("appdb") as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'")
    return f"postgresql://{name}:pw-{name}@db.invalid/appdb"


async def test_200_concurrent_requests_never_exceed_pool_size_5_and_all_succeed(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "bound_user")
    # one worker: it reaches exactly its pool; over workers, test_workers
    gateway = gateways("--pool-size", "5", "--acquire-timeout", "30", "--workers", "1")
    body = {"query": "SELECT pg_sleep(0.01), $1::int AS n"}
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(n: int) -> httpx.Response:
            return await client.post(
                f"{gateway.url}/sql",
                json={**body, "params": [n]},
                headers={"Neon-Connection-String": url},
            )

        with ConnectionSampler(postgres, "bound_user") as sampler:
            responses = await asyncio.gather(*(one(n) for n in range(200)))
    assert [r.status_code for r in responses] == [200] * 200
    assert sorted(r.json()["rows"][0]["n"] for r in responses) == list(range(200))
    assert sampler.highest == 5


def backend_pid(gateway_url: str, url: str) -> int:
    answer = post_sql(gateway_url, url, {"query": "SELECT pg_backend_pid() AS pid"})
    return int(answer.json()["rows"][0]["pid"])


def test_a_healthy_connection_is_reused_and_one_that_saw_an_error_is_replaced(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "reuse_user")
    gateway = gateways("--pool-size", "1")
    first = backend_pid(gateway.url, url)
    assert backend_pid(gateway.url, url) == first
    assert post_sql(gateway.url, url, {"query": "SELECT 1/0"}).status_code == 400
    after_error = backend_pid(gateway.url, url)
    assert after_error != first
    assert backend_pid(gateway.url, url) == after_error


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "killed_user")
    gateway = gateways("--pool-size", "1")
    pid = backend_pid(gateway.url, url)
    with postgres.admin("appdb") as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)
    replacement = backend_pid(gateway.url, url)
    assert replacement != pid


def test_a_connection_killed_mid_query_answers_503_and_is_replaced(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "killed_busy_user")
    gateway = gateways("--pool-size", "1")
    pid = backend_pid(gateway.url, url)

    def kill_soon() -> None:
        time.sleep(0.3)
        with postgres.admin("appdb") as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    killer = threading.Thread(target=kill_soon)
    killer.start()
    failed = post_sql(gateway.url, url, {"query": "SELECT pg_sleep(5)"})
    killer.join()
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert failed.json() == {"message": "the database connection was lost"}
    assert backend_pid(gateway.url, url) != pid


def test_client_disconnect_cancels_the_query_on_the_server(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "cancel_user")
    gateway = gateways("--pool-size", "2")
    with pytest.raises(httpx.ReadTimeout):
        post_sql(gateway.url, url, {"query": "SELECT pg_sleep(30) /* cancel-me */"}, timeout=0.5)
    assert wait_until_not_running(postgres, "cancel-me", seconds=20) == 0  # of its 30 s
    assert '"status": 499' in gateway.log_once_it_has('"status": 499')
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200


def test_idle_connections_close_and_the_pool_is_forgotten_after_the_idle_timeout(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "idle_user")
    gateway = gateways("--idle-timeout", "0.4")
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200
    assert server_connections(postgres, "idle_user") == 1
    deadline = time.monotonic() + 30  # a wait, not a measurement: the sweep runs every 0.2 s
    while server_connections(postgres, "idle_user") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_connections(postgres, "idle_user") == 0
    time.sleep(0.6)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'user="idle_user"' not in metrics
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200
