"""SIGTERM drains the gateway for a load balancer: /readyz 503 at once, serving goes on
for --drain-seconds with new transactions and sessions refused, open transactions may
finish, then it exits 0; a second SIGTERM ends it at once."""

from __future__ import annotations

import signal
import time

import httpx

from tests.gateway.test_websocket_sessions import ws_url
from tests.support.pg_websocket import WebSocketPostgres
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    Gateway,
    GatewayFactory,
    make_app_url,
)

HEADERS = {"Neon-Connection-String": make_app_url()}


def ready_status(gateway: Gateway) -> int:
    return httpx.get(f"{gateway.url}/readyz", timeout=10).status_code


def until_draining(gateway: Gateway) -> None:
    """/readyz turns 503 (the effect of the signal); the bound only keeps a broken build
    from hanging."""
    deadline = time.monotonic() + 30
    while ready_status(gateway) != 503:
        assert time.monotonic() < deadline and gateway.process.poll() is None
        time.sleep(0.02)


def test_sigterm_turns_readyz_503_keeps_serving_and_refuses_new_transactions(
    gateways: GatewayFactory,
) -> None:
    gateway = gateways("--drain-seconds", "120", "--workers", "1")
    assert ready_status(gateway) == 200
    gateway.process.send_signal(signal.SIGTERM)
    until_draining(gateway)
    served = httpx.post(f"{gateway.url}/sql", json={"query": "SELECT 1 AS one"}, headers=HEADERS)
    assert served.status_code == 200 and served.json()["rows"] == [{"one": 1}]
    refused = httpx.post(f"{gateway.url}/transaction", json={}, headers=HEADERS)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert "another replica" in refused.json()["message"]
    gateway.process.send_signal(signal.SIGTERM)  # a second one: no waiting for the drain
    # exits long before its 120 s drain would have ended
    assert gateway.process.wait(timeout=60) == 0


def test_a_transaction_open_at_sigterm_finishes_and_then_the_gateway_exits(
    gateways: GatewayFactory,
) -> None:
    gateway = gateways("--drain-seconds", "0.5", "--workers", "1")
    opened = httpx.post(f"{gateway.url}/transaction", json={"timeout_ms": 14000}, headers=HEADERS)
    assert opened.status_code == 201, opened.text
    transaction = opened.json()["id"]
    gateway.process.send_signal(signal.SIGTERM)
    until_draining(gateway)
    time.sleep(1.0)  # past the drain: the open transaction keeps the gateway serving
    assert gateway.process.poll() is None
    inside = {**HEADERS, "Poolgate-Transaction": transaction}
    ran = httpx.post(f"{gateway.url}/sql", json={"query": "SELECT 2 AS two"}, headers=inside)
    assert ran.status_code == 200
    committed = httpx.post(f"{gateway.url}/transaction/{transaction}/commit", headers=HEADERS)
    assert committed.status_code == 200 and committed.json() == {"committed": True}
    assert gateway.process.wait(timeout=60) == 0


async def test_draining_refuses_new_sessions_and_ends_open_ones_after_it(
    gateways: GatewayFactory,
) -> None:
    gateway = gateways("--drain-seconds", "2", "--workers", "1")
    open_one = WebSocketPostgres(ws_url(gateway), APP_USER, APP_PASSWORD, APP_DATABASE)
    new_one = WebSocketPostgres(ws_url(gateway), APP_USER, APP_PASSWORD, APP_DATABASE)
    try:
        assert (await open_one.connect()).status() == b"I"
        gateway.process.send_signal(signal.SIGTERM)
        until_draining(gateway)
        assert (await open_one.query("SELECT 1")).status() == b"I"  # served through the drain
        refused = await new_one.connect()
        assert [error["C"] for error in refused.errors()] == ["57P03"]
        ended = await open_one.read_reply()  # after the drain: told to go
        assert [error["C"] for error in ended.errors()] == ["57P01"]
    finally:
        await open_one.close()
        await new_one.close()
    assert gateway.process.wait(timeout=60) == 0
