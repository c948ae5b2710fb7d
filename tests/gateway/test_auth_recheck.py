"""A password the gateway once accepted is trusted only for --auth-recheck seconds: then
a real login checks it again, so a revoked password (or a role that may no longer log
in) stops working, for pooled requests and cached reads alike."""

from __future__ import annotations

import time

import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import GatewayFactory, server_connections
from tests.support.sql import post_sql

RECHECK = 0.3  # seconds a login is trusted, in these tests
REFUSED = {"message": "password authentication failed", "code": "28P01", "severity": "FATAL"}
CACHED = {"Poolgate-Cache-TTL": "600"}


def past_the_recheck_window() -> None:
    time.sleep(RECHECK * 2)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_revoked_password_is_refused_once_its_login_is_rechecked_cached_reads_too(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, workers: str
) -> None:
    role = f"recheck_pw_{workers}"
    old = make_role(postgres, role)
    gateway = gateways("--auth-recheck", str(RECHECK), "--workers", workers)
    read = {"query": "SELECT 'cached' AS v"}
    assert post_sql(gateway.url, old, {"query": "SELECT 1"}).status_code == 200
    assert post_sql(gateway.url, old, read, headers=CACHED).status_code == 200
    with postgres.admin("appdb") as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD 'the-new-one'")
    past_the_recheck_window()
    pooled = post_sql(gateway.url, old, {"query": "SELECT 1"})
    cached = post_sql(gateway.url, old, read, headers=CACHED)
    assert (pooled.status_code, pooled.json()) == (400, REFUSED)
    assert (cached.status_code, cached.json()) == (400, REFUSED)
    new = old.replace(f"pw-{role}", "the-new-one")
    assert post_sql(gateway.url, new, {"query": "SELECT 1"}).status_code == 200
    assert post_sql(gateway.url, old, {"query": "SELECT 1"}).json() == REFUSED


def test_a_failed_recheck_closes_the_idle_connections_of_the_credential(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    role = "recheck_idle"
    url = make_role(postgres, role)
    gateway = gateways("--auth-recheck", str(RECHECK), "--workers", "1")
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200
    assert server_connections(postgres, role) == 1  # idle in the pool
    with postgres.admin("appdb") as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD 'rotated'")
    past_the_recheck_window()
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).json() == REFUSED
    assert server_connections(postgres, role) == 0


def test_a_role_made_nologin_is_refused_once_its_login_is_rechecked(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    role = "recheck_nologin"
    url = make_role(postgres, role)
    gateway = gateways("--auth-recheck", str(RECHECK), "--workers", "1")
    read = {"query": "SELECT 'kept' AS v"}
    assert post_sql(gateway.url, url, read, headers=CACHED).status_code == 200
    with postgres.admin("appdb") as conn:
        conn.execute(f"ALTER ROLE {role} NOLOGIN")
    past_the_recheck_window()
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).json() == REFUSED
    assert post_sql(gateway.url, url, read, headers=CACHED).json() == REFUSED


def test_within_the_window_an_accepted_password_logs_in_no_more_than_once(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    """The re-check is one fresh login per window, not one per request: the pool keeps
    serving from the same server connection."""
    role = "recheck_cost"
    url = make_role(postgres, role)
    gateway = gateways("--auth-recheck", "600", "--workers", "1", "--pool-size", "1")
    pids = {
        post_sql(gateway.url, url, {"query": "SELECT pg_backend_pid() AS p"}).json()["rows"][0]["p"]
        for _ in range(20)
    }
    assert len(pids) == 1
