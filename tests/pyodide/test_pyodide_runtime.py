"""The Worker's runtime-facing code, run inside Pyodide with the real workers SDK.

What this proves and what it cannot: see README.md, "What was and was not exercised".
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from devstack.pyodide_host import wheel_files
from tests.support.services import GatewayFactory, make_app_url

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


def sdk_wheel() -> Path:
    """The SDK as a local wheel, at the version uv.lock pins (what the type checks use)."""
    (wheel,) = [w for w in wheel_files() if w.name.startswith("workers_runtime_sdk-")]
    return wheel


@pytest.fixture(scope="module")
def pyodide_results(
    gateways: GatewayFactory,
    schema: None,
    postgres: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    node = node_toolchain.node()
    if not (ROOT / "node_modules" / "pyodide").is_dir():
        subprocess.run(
            [*node_toolchain.npm(), "ci", "--no-audit", "--no-fund"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
    with postgres.admin("appdb") as conn:
        conn.execute("TRUNCATE logs")
    live = gateways()
    stopped = gateways()
    stopped.stop()
    config = {
        "wheels": [str(sdk_wheel())],
        "src": str(ROOT / "src"),
        "gateway_url": live.url,
        "stopped_gateway_url": stopped.url,
        "connection_string": make_app_url(),
    }
    config_path = tmp_path_factory.mktemp("pyodide") / "config.json"
    config_path.write_text(json.dumps(config))
    result = subprocess.run(
        [node, str(HERE / "harness.mjs"), str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


def test_it_is_really_pyodide_matching_the_wrangler_compat_date(
    pyodide_results: dict[str, Any],
) -> None:
    # wrangler.toml's compatibility_date 2026-11-01 selects Python 3.14; workerd runs it on
    # the Pyodide its runtime bundle names (314.0.6), and so does this host
    assert pyodide_results["platform"] == "emscripten"
    assert pyodide_results["python"].startswith("3.14.")
    production = node_toolchain.PYODIDE_BUNDLE.split("_")[1]
    package = json.loads((ROOT / "package.json").read_text())
    assert package["devDependencies"]["pyodide"] == production
    installed = json.loads((ROOT / "node_modules" / "pyodide" / "package.json").read_text())
    assert installed["version"] == production


def test_the_adapter_loads_without_pydantic_httpx_or_the_handlers(
    pyodide_results: dict[str, Any],
) -> None:
    assert pyodide_results["heavy_modules_loaded"] == []


def test_get_with_query_and_headers_reaches_the_handler(pyodide_results: dict[str, Any]) -> None:
    reply = pyodide_results["get_with_query"]
    assert reply["type"] == "Response"
    assert reply["status"] == 200
    assert reply["headers"]["content-type"] == "application/json; charset=utf-8"
    assert reply["body"] == {
        "method": "GET",
        "path": "/echo",
        "query": {"a": "1", "b": "two words"},
        "body": None,
        "x_test": "yes",
    }
    assert len(reply["headers"]["x-request-id"]) == 36


def test_post_json_body_arrives_intact(pyodide_results: dict[str, Any]) -> None:
    assert pyodide_results["post_json"]["body"]["body"] == {"k": [1, "é"]}


def test_head_answers_like_get_without_a_body(pyodide_results: dict[str, Any]) -> None:
    reply = pyodide_results["head"]
    assert (reply["status"], reply["raw_length"]) == (200, 0)
    assert int(reply["headers"]["content-length"]) > 0


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad_json", 400, "malformed_json"),
        ("oversized", 413, "payload_too_large"),
        ("not_found", 404, "not_found"),
        ("wrong_method", 405, "method_not_allowed"),
        ("unhandled", 500, "internal_error"),
    ],
)
def test_failures_become_json_errors_in_the_runtime(
    pyodide_results: dict[str, Any], case: str, status: int, code: str
) -> None:
    reply = pyodide_results[case]
    assert reply["status"] == status
    assert reply["body"]["error"]["code"] == code
    assert reply["headers"]["content-type"] == "application/json; charset=utf-8"
    assert "internal detail" not in json.dumps(reply["body"])


def test_wrong_method_carries_allow(pyodide_results: dict[str, Any]) -> None:
    assert pyodide_results["wrong_method"]["headers"]["allow"] == "GET, HEAD, OPTIONS, POST"


def test_a_route_reaches_postgres_through_the_runtimes_fetch(
    pyodide_results: dict[str, Any],
) -> None:
    assert pyodide_results["through_database"]["body"] == {"n": 42}
    assert pyodide_results["entrypoint"] == {"status": 200, "body": {"n": 2}}


def test_request_logs_are_handed_to_wait_until_and_land_in_postgres(
    pyodide_results: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    # ten requests went through the adapter; each handed its log write to ctx.waitUntil
    assert pyodide_results["deferred_count"] == 10
    with postgres.admin("appdb") as conn:
        messages = [row[0] for row in conn.execute("SELECT message FROM logs ORDER BY id")]
    assert len(messages) == 10
    assert messages.count("GET /db 200") == 2
    assert "POST /echo 413" in messages and "GET /boom 500" in messages


def test_fetch_transport_single_query_decodes_exact_values(
    pyodide_results: dict[str, Any],
) -> None:
    assert pyodide_results["single_query"] == {
        "big": 9007199254740993,
        "exact": "1.10",
        "at_is_aware": True,
        "arr": [1, None],
        "raw": [0, 255],
    }


def test_fetch_transport_batch_runs_as_one_transaction(pyodide_results: dict[str, Any]) -> None:
    assert pyodide_results["batch"] == [[{"a": 1}], [{"b": "x"}]]


def test_an_interactive_transaction_runs_over_fetch(pyodide_results: dict[str, Any]) -> None:
    assert pyodide_results["transaction"] == {
        "inside": [{"n": 7}],
        "level": {"transaction_isolation": "serializable"},
        "rolled_back": "yes",
    }


def test_fetch_transport_reports_postgres_errors_with_their_sqlstate(
    pyodide_results: dict[str, Any],
) -> None:
    assert pyodide_results["postgres_error"] == {
        "type": "InvalidValue",
        "sqlstate": "22012",
        "message": "division by zero",
    }


def test_fetch_transport_reports_a_stopped_gateway_as_unavailable_with_an_unknown_outcome(
    pyodide_results: dict[str, Any],
) -> None:
    """`fetch` cannot tell "could not connect" from "the connection broke after sending",
    so the Workers transport reports both as an unknown outcome: a DatabaseUnavailable
    (503 on a read) that a write route answers 504."""
    assert pyodide_results["gateway_stopped"]["type"] == "OutcomeUnknown"


def test_a_deployed_worker_refuses_an_endpoint_on_a_custom_port(
    pyodide_results: dict[str, Any],
) -> None:
    """workerd's deployed fetch() would send it to 443 instead; wrangler dev would not."""
    answer = pyodide_results["custom_port_deployed"]
    assert answer["status"] == 500
    assert answer["body"]["error"]["code"] == "not_configured"
    assert "ignores custom ports" in answer["body"]["error"]["message"]
