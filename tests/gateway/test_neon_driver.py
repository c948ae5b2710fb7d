"""Neon's own npm driver (`@neondatabase/serverless`) against the gateway, unmodified."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack import node_toolchain
from tests.support.services import Gateway

CLIENT_DIR = Path(__file__).parent / "neon_client"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver_output(gateway: Gateway, app_url: str) -> dict[str, Any]:
    node = node_toolchain.node()
    if not (ROOT / "node_modules" / "@neondatabase" / "serverless").is_dir():
        subprocess.run(
            [*node_toolchain.npm(), "ci", "--no-audit", "--no-fund"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=300,
        )
    result = subprocess.run(
        [node, "check.mjs", gateway.url, app_url],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_driver_runs_a_plain_query(driver_output: dict[str, Any]) -> None:
    assert driver_output["plain"] == [{"one": 1, "word": "text", "nothing": None}]


def test_driver_runs_parameterised_and_tagged_queries(driver_output: dict[str, Any]) -> None:
    assert driver_output["parameterised"] == [{"n": 42, "s": "it's", "big": "9007199254740993"}]
    assert driver_output["tagged"] == [{"name": "O'Reilly", "list": [1, 2, 3]}]


def test_driver_full_results_carry_command_row_count_and_fields(
    driver_output: dict[str, Any],
) -> None:
    assert driver_output["full"] == {
        "command": "SELECT",
        "rowCount": 3,
        "fields": [["g", 23]],
        "rows": [{"g": 1}, {"g": 2}, {"g": 3}],
    }


def test_driver_transaction_runs_as_one_batch(driver_output: dict[str, Any]) -> None:
    assert driver_output["transaction"] == [[{"id": 1}], [{"id": 2}], [{"n": 2}]]


def test_driver_gets_neondberror_with_the_sqlstate_of_a_failing_statement(
    driver_output: dict[str, Any],
) -> None:
    assert driver_output["failure"]["isNeonDbError"] is True
    assert driver_output["failure"]["code"] == "22012"
    assert driver_output["failure"]["message"] == "division by zero"


def test_driver_failed_transaction_reports_the_violation_and_commits_nothing(
    driver_output: dict[str, Any],
) -> None:
    assert driver_output["failedTransaction"]["isNeonDbError"] is True
    assert driver_output["failedTransaction"]["code"] == "23505"
    assert driver_output["failedTransaction"]["constraint"] == "neon_driver_check_pkey"
    assert driver_output["afterFailedTransaction"] == [{"id": 1}, {"id": 2}]


def test_driver_sees_a_bad_password_as_28P01(driver_output: dict[str, Any]) -> None:
    assert driver_output["badPassword"]["isNeonDbError"] is True
    assert driver_output["badPassword"]["code"] == "28P01"
