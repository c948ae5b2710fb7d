"""Neon's driver in its WebSocket mode (`Pool`, `Client`) against the gateway, unmodified:
the login as Neon's proxy does it (cleartext password, pipelined or not), sessions that
hold a pooled connection, and the connection given back clean."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack import node_toolchain
from tests.support.services import Gateway, GatewayFactory, make_app_url

CLIENT_DIR = Path(__file__).parent / "neon_client"


def run_websocket_client(
    gateway: Gateway, env: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    address = urlsplit(gateway.url)
    config = {
        "host": address.hostname,
        "port": address.port,
        "secure": address.scheme == "https",
        "connectionString": make_app_url(host="gw.example"),
        "wrongConnectionString": make_app_url(password="not-the-password", host="gw.example"),
        **extra,
    }
    result = subprocess.run(
        [node_toolchain.node(), "websocket.mjs", json.dumps(config)],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    output: dict[str, Any] = json.loads(result.stdout)
    return output


@pytest.fixture(scope="module")
def websocket_output(gateways: GatewayFactory) -> dict[str, Any]:
    return run_websocket_client(gateways("--pool-size", "4", "--workers", "1"))


def test_the_driver_logs_in_with_its_password_pipelined_or_not(
    websocket_output: dict[str, Any],
) -> None:
    expected = [{"one": 1, "word": "text"}]
    assert websocket_output["pipeline_password"] == expected
    assert websocket_output["pipeline_false"] == expected


def test_a_client_runs_parameters_and_reuses_a_named_prepared_statement(
    websocket_output: dict[str, Any],
) -> None:
    client = websocket_output["client"]
    assert client["parameters"] == [{"n": 42, "s": "it's"}]
    assert client["prepared"] == [2, 3, 4]
    assert client["preparedOnServer"] == 1  # prepared once on the session's connection


def test_a_client_commits_and_rolls_back_interactive_transactions(
    websocket_output: dict[str, Any],
) -> None:
    assert websocket_output["client"]["afterCommitAndRollback"] == [1, 2]
    assert websocket_output["poolCommitted"] == 1


def test_an_error_inside_a_transaction_aborts_it_until_rollback(
    websocket_output: dict[str, Any],
) -> None:
    client = websocket_output["client"]
    assert client["inTransaction"]["code"] == "22012"
    assert client["afterError"]["code"] == "25P02"
    assert client["afterRollback"] == [{"two": 2}]


def test_a_pool_of_sessions_answers_concurrent_queries(websocket_output: dict[str, Any]) -> None:
    assert websocket_output["pool"] == [10, 20, 30, 40, 50]


def test_a_wrong_password_is_refused_with_postgres_own_error(
    websocket_output: dict[str, Any],
) -> None:
    for pipeline in ("password", "false"):
        refused = websocket_output[f"wrongPassword_{pipeline}"]
        assert refused["failure"] is not None, refused
        codes = {refused["failure"]["code"], *(event["code"] for event in refused["events"])}
        assert "28P01" in codes, refused
