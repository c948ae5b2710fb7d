"""One deadline per request, from its arrival: waiting for a connection, connecting and
running all count against it (--statement-timeout + 1 s), for plain requests and
interactive-transaction calls alike. Shown by effect: what was answered, what the
server still runs, and whether a transaction that held the pool was still open."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import Gateway, GatewayFactory, wait_until_not_running
from tests.support.sql import post_sql


def begin(gateway: Gateway, url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/transaction",
        json=body,
        headers={"Neon-Connection-String": url},
        timeout=120,
    )


def in_transaction(gateway: Gateway, url: str, tx: str, query: str) -> httpx.Response:
    return post_sql(gateway.url, url, {"query": query}, headers={"Poolgate-Transaction": tx})


def end(gateway: Gateway, url: str, tx: str, action: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/transaction/{tx}/{action}", headers={"Neon-Connection-String": url}
    )


def waiting_for_a_connection(gateway: Gateway, user: str) -> int:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith("poolgate_pool_waiting{") and f'user="{user}"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


@pytest.fixture
def held_pool(gateways: GatewayFactory, postgres: EmbeddedPostgres) -> tuple[Gateway, str, str]:
    """A pool of one connection that an open transaction (10 s) holds; the acquire
    timeout (60 s) is far past the request deadline (--statement-timeout 1 + 1 s)."""
    url = make_role(postgres, "deadline_held")
    gateway = gateways(
        "--pool-size", "1", "--workers", "1", "--statement-timeout", "1",
        "--acquire-timeout", "60", "--transaction-timeout-max", "30",
    )  # fmt: skip
    opened = begin(gateway, url, {"timeout_ms": 10_000})
    assert opened.status_code == 201
    return gateway, url, str(opened.json()["id"])


def test_a_request_waiting_for_a_connection_is_answered_503_at_its_deadline_not_its_acquire_timeout(
    held_pool: tuple[Gateway, str, str],
) -> None:
    gateway, url, holder = held_pool
    waited = post_sql(gateway.url, url, {"query": "SELECT 1"}, timeout=120)
    assert waited.status_code == 503 and waited.headers["Retry-After"]
    # answered while the transaction that holds the only connection was still open
    assert in_transaction(gateway, url, holder, "SELECT 1").status_code == 200
    assert end(gateway, url, holder, "rollback").status_code == 200


def test_a_transaction_waiting_for_a_connection_is_answered_503_at_its_deadline(
    held_pool: tuple[Gateway, str, str],
) -> None:
    gateway, url, holder = held_pool
    waited = begin(gateway, url, {"max_wait_ms": 60_000})
    assert waited.status_code == 503 and waited.headers["Retry-After"]
    assert in_transaction(gateway, url, holder, "SELECT 1").status_code == 200
    assert end(gateway, url, holder, "rollback").status_code == 200


def test_the_wait_for_a_connection_and_the_statement_share_one_deadline(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    """The request waits (the pool's only connection is held) most of its 5 s deadline,
    then runs a statement that Postgres's own 4 s timeout would let finish: the gateway's
    deadline, counted from the request's arrival, ends it (504) and cancels it."""
    url = make_role(postgres, "deadline_shared")
    gateway = gateways(
        "--pool-size", "1", "--workers", "1", "--statement-timeout", "4",
        "--acquire-timeout", "60",
    )  # fmt: skip
    opened = begin(gateway, url, {"timeout_ms": 10_000})
    assert opened.status_code == 201
    answers: list[httpx.Response] = []
    query = {"query": "SELECT pg_sleep(3) /* deadline-shared */"}
    waiter = threading.Thread(target=lambda: answers.append(post_sql(gateway.url, url, query)))
    waiter.start()
    while waiting_for_a_connection(gateway, "deadline_shared") == 0:
        time.sleep(0.01)  # it has arrived: its deadline runs from about now
    time.sleep(4)  # most of its deadline, waiting; then its statement needs 3 s more
    assert end(gateway, url, str(opened.json()["id"]), "rollback").status_code == 200
    waiter.join()
    assert answers[0].status_code == 504
    assert "Retry-After" not in answers[0].headers  # sent: its outcome is not known
    assert wait_until_not_running(postgres, "deadline-shared", seconds=30) == 0
    assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200
