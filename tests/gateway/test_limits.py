"""Limits across tenants: a global connection cap that an idle role cannot hog, failed
logins throttled, a wrong-password flood that cannot starve a tenant, bounded pools and
metric labels."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from poolgate.config import parse_settings
from poolgate.core.errors import TooManyLogins
from poolgate.core.metrics import MAX_SQLSTATE_LABELS, Metrics
from poolgate.core.pool import MAX_POOLS, PoolRegistry
from poolgate.core.requests import Credentials
from poolgate.core.throttle import LoginThrottle

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import GatewayFactory
from tests.support.sql import post_sql


def roles_connections(postgres: EmbeddedPostgres, *users: str) -> int:
    with postgres.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", [list(users)]
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


async def concurrently(url: str, connection_string: str, queries: list[str]) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    f"{url}/sql",
                    json={"query": query},
                    headers={"Neon-Connection-String": connection_string},
                )
                for query in queries
            )
        )
    return [reply.status_code for reply in replies]


async def wrong_password_flood(gateway_url: str, wrong: str, count: int) -> list[int]:
    """`count` concurrent requests, each with its own wrong password (`wrong` formatted
    with it); their statuses."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    f"{gateway_url}/sql",
                    json={"query": "SELECT 1"},
                    headers={"Neon-Connection-String": wrong.format(f"guess{n}")},
                )
                for n in range(count)
            )
        )
    return [reply.status_code for reply in replies]


async def test_the_global_cap_closes_an_idle_roles_connections_to_serve_a_busy_one(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    idle, busy = make_role(postgres, "cap_idle"), make_role(postgres, "cap_busy")
    # one worker: the cap is split between workers (see test_workers for the whole)
    gateway = gateways(
        "--max-connections", "3", "--pool-size", "3", "--acquire-timeout", "1", "--workers", "1"
    )
    assert await concurrently(gateway.url, idle, ["SELECT pg_sleep(0.2)"] * 3) == [200] * 3
    assert roles_connections(postgres, "cap_idle") == 3  # now idle in its pool
    assert await concurrently(gateway.url, busy, ["SELECT pg_sleep(0.2)"] * 3) == [200] * 3
    assert roles_connections(postgres, "cap_idle", "cap_busy") <= 3
    assert roles_connections(postgres, "cap_busy") == 3


async def test_past_the_global_cap_with_nothing_idle_the_answer_is_503(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    first, second = make_role(postgres, "cap_first"), make_role(postgres, "cap_second")
    gateway = gateways("--max-connections", "2", "--acquire-timeout", "0.5", "--workers", "1")
    holding = asyncio.create_task(concurrently(gateway.url, first, ["SELECT pg_sleep(2)"] * 2))
    await asyncio.sleep(0.5)
    refused = post_sql(gateway.url, second, {"query": "SELECT 1"})
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert "server connections of the gateway" in refused.json()["message"]
    assert await holding == [200, 200]
    assert post_sql(gateway.url, second, {"query": "SELECT 1"}).status_code == 200


def test_failed_logins_are_throttled_per_user_without_reaching_postgres(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    make_role(postgres, "throttled_user")
    gateway = gateways("--workers", "1")  # across workers: test_workers
    wrong = "postgresql://throttled_user:wrong@db.invalid/appdb"
    codes = [post_sql(gateway.url, wrong, {"query": "SELECT 1"}).status_code for _ in range(10)]
    assert codes == [400] * 10  # each one a real 28P01 from Postgres
    throttled = post_sql(gateway.url, wrong, {"query": "SELECT 1"})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    # counted as refused before a login: Postgres was not asked
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "poolgate_logins_throttled_total 1.0" in metrics


async def test_a_wrong_password_flood_does_not_starve_a_tenants_accepted_password(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    right = make_role(postgres, "flooded_user")
    gateway = gateways("--pool-size", "3", "--acquire-timeout", "2")
    assert post_sql(gateway.url, right, {"query": "SELECT 1"}).status_code == 200
    wrong = "postgresql://flooded_user:{}@db.invalid/appdb"

    flooding = asyncio.create_task(wrong_password_flood(gateway.url, wrong, 300))
    await asyncio.sleep(0.05)
    answers = await concurrently(gateway.url, right, ["SELECT 1"] * 5)
    assert answers == [200] * 5
    assert set(await flooding) <= {400, 429, 503}


def test_pools_are_bounded_however_many_distinct_users_ask() -> None:
    settings = parse_settings(["--upstream", "postgresql://h:5432"], environ={})
    registry = PoolRegistry(settings, LoginThrottle())
    for n in range(MAX_POOLS + 500):
        registry.pool_for(Credentials(user=f"u{n}", password="x", database="d"))
    assert len(list(registry.stats())) <= MAX_POOLS


def test_sqlstate_labels_in_metrics_are_bounded() -> None:
    settings = parse_settings(["--upstream", "postgresql://h:5432"], environ={})
    metrics = Metrics(PoolRegistry(settings))
    for n in range(MAX_SQLSTATE_LABELS + 100):
        metrics.observe("query_failed", 0.001, f"Z{n:04d}")
    rendered = metrics.render().decode()
    labels = {
        line.split('sqlstate="')[1].split('"')[0]
        for line in rendered.splitlines()
        if line.startswith("poolgate_postgres_errors_total{")
    }
    assert len(labels) <= MAX_SQLSTATE_LABELS + 1 and "other" in labels


def test_the_throttle_forgets_failures_after_its_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(limit=2, window=60, clock=lambda: now[0])
    throttle.failed("1.2.3.4", "u")
    throttle.failed("1.2.3.4", "u")
    with pytest.raises(TooManyLogins):
        throttle.check("1.2.3.4", "other-user")  # the address alone is over its limit
    with pytest.raises(TooManyLogins):
        throttle.check("5.6.7.8", "u")  # and so is the user, from anywhere
    now[0] += 61
    throttle.check("1.2.3.4", "u")


async def test_a_wrong_password_flood_from_the_tenants_own_address_never_throttles_its_right_one(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    """Hundreds of wrong passwords for the role from 127.0.0.1 throttle that address and
    user; the right password, sent from the same address during a second flood by a
    client on fresh connections (so both workers see it, only one of which logged it in
    before the throttle closed), is never answered 429."""
    right = make_role(postgres, "flood_same_address")
    gateway = gateways("--workers", "2")
    assert post_sql(gateway.url, right, {"query": "SELECT 1"}).status_code == 200
    wrong = "postgresql://flood_same_address:{}@db.invalid/appdb"
    good: list[int] = []

    def good_client(count: int) -> None:
        for _ in range(count):  # a new connection each: the kernel spreads them
            good.append(post_sql(gateway.url, right, {"query": "SELECT 1"}).status_code)

    first_flood = await wrong_password_flood(gateway.url, wrong, 400)
    assert 400 in first_flood  # 28P01s: now the address and the user are throttled
    flooding = asyncio.create_task(wrong_password_flood(gateway.url, wrong, 400))
    await asyncio.to_thread(good_client, 30)
    assert set(await flooding) == {429}
    assert good == [200] * 30
