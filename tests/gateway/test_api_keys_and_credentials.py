"""API keys in front of Postgres authentication, and credentials the gateway never
supplies itself: against real gateway processes and the real Postgres."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from poolgate.config import ConfigError, parse_settings

from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    Gateway,
    GatewayFactory,
    make_app_url,
    server_connections,
)
from tests.support.sql import post_sql

OLD_KEY = "old-key-0123456789abcdef"
NEW_KEY = "new-key-fedcba9876543210"


@pytest.fixture(scope="module")
def keyed(gateways: GatewayFactory) -> Gateway:
    return gateways("--api-keys", f"{OLD_KEY},{NEW_KEY}")


def keyed_sql(gateway: Gateway, key: str | None, url: str, body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return post_sql(gateway.url, url, body, headers=headers)


def test_without_a_valid_key_every_call_is_401_before_postgres(
    keyed: Gateway, postgres: EmbeddedPostgres
) -> None:
    before = server_connections(postgres, APP_USER)
    wrong_password = make_app_url(password="wrong")
    for key in (None, "not-a-key-0123456789", OLD_KEY[:-1]):
        for url in (make_app_url(), wrong_password):
            reply = keyed_sql(keyed, key, url, {"query": "SELECT 1"})
            assert reply.status_code == 401, reply.text
            assert "code" not in reply.json()  # never 28P01: Postgres was not asked
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    invalidate = httpx.post(
        f"{keyed.url}/invalidate",
        json={"tags": ["x"]},
        headers={"Neon-Connection-String": make_app_url()},
    )
    assert invalidate.status_code == 401
    assert httpx.get(f"{keyed.url}/metrics").status_code == 401
    assert httpx.get(f"{keyed.url}/healthz").status_code == 200
    assert server_connections(postgres, APP_USER) == before


def test_either_listed_key_works_and_the_password_comes_from_the_url(keyed: Gateway) -> None:
    for key in (OLD_KEY, NEW_KEY):
        reply = keyed_sql(keyed, key, make_app_url(), {"query": "SELECT 1 AS one"})
        assert reply.status_code == 200 and reply.json()["rows"] == [{"one": 1}]
    refused = keyed_sql(keyed, NEW_KEY, make_app_url(password="wrong"), {"query": "SELECT 1"})
    assert (refused.status_code, refused.json()["code"]) == (400, "28P01")
    metrics = httpx.get(f"{keyed.url}/metrics", headers={"Authorization": f"Bearer {OLD_KEY}"})
    assert metrics.status_code == 200


def test_keys_can_come_from_a_file(gateways: GatewayFactory, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated 2026-11\n{NEW_KEY}\n\n")
    gateway = gateways("--api-keys-file", str(keys))
    assert keyed_sql(gateway, NEW_KEY, make_app_url(), {"query": "SELECT 1"}).status_code == 200
    assert keyed_sql(gateway, OLD_KEY, make_app_url(), {"query": "SELECT 1"}).status_code == 401


@pytest.mark.parametrize("keys", ["short", "has space inside the key", "ok-key-0123456789,x"])
def test_weak_keys_stop_start_up(keys: str) -> None:
    with pytest.raises(ConfigError, match="API key"):
        parse_settings(["--upstream", "postgresql://h:5432", "--api-keys", keys], environ={})


def test_a_request_without_a_password_never_borrows_the_gateways_own(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{APP_USER}:{APP_PASSWORD}\n")
    passfile.chmod(0o600)
    gateway = gateways(env={"PGPASSWORD": APP_PASSWORD, "PGPASSFILE": str(passfile)})
    # (without keys a bearer token is the password: tests/gateway/test_errors.py)
    for url in (
        f"postgresql://{APP_USER}@db.invalid/{APP_DATABASE}",
        f"postgresql://{APP_USER}:@db.invalid/{APP_DATABASE}",
    ):
        reply = post_sql(gateway.url, url, {"query": "SELECT 1"})
        assert (reply.status_code, reply.json().get("code")) == (400, "28P01"), reply.text


@pytest.mark.parametrize(
    "url",
    [
        make_app_url(user=f"{APP_USER}\x00junk"),
        make_app_url(database=f"{APP_DATABASE}\x00x"),
        make_app_url(user="a" * 64),
        make_app_url(database="d" * 64),
    ],
    ids=["nul-in-user", "nul-in-database", "64-byte-user", "64-byte-database"],
)
def test_names_postgres_would_cut_or_alias_are_refused(gateway: Gateway, url: str) -> None:
    reply = post_sql(gateway.url, url, {"query": "SELECT 1"})
    assert reply.status_code == 400
    assert "NUL" in reply.json()["message"] or "63 bytes" in reply.json()["message"]
