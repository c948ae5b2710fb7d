"""Every row of PROTOCOL.md's error table, against the real gateway and EmbeddedPostgres."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from poolgate.core import wire
from poolgate.core.errors import GatewayError, OutcomeUnknown, Unavailable
from poolgate.core.execute import translate_error

from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    Gateway,
    GatewayFactory,
    make_app_url,
    raw_exchange,
    wait_until_not_running,
)
from tests.support.sql import post_sql

POSTGRES_ERROR_FIELDS = {
    "message",
    "code",
    "detail",
    "hint",
    "position",
    "internalPosition",
    "internalQuery",
    "severity",
    "where",
    "table",
    "column",
    "schema",
    "dataType",
    "constraint",
    "file",
    "line",
    "routine",
}


def test_postgres_error_answers_400_with_every_diagnostic_field(
    gateway: Gateway, app_url: str
) -> None:
    response = post_sql(gateway.url, app_url, {"query": "SELECT missing_column FROM pg_class"})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == POSTGRES_ERROR_FIELDS
    assert body["code"] == "42703"
    assert body["message"] == 'column "missing_column" does not exist'
    assert body["position"] == "8"
    assert body["severity"] == "ERROR"
    assert body["routine"]


def test_constraint_violation_names_table_column_and_constraint(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS checked (n int NOT NULL CHECK (n > 0))")
        conn.execute("ALTER TABLE checked OWNER TO app")
    missing = post_sql(gateway.url, app_url, {"query": "INSERT INTO checked VALUES (NULL)"}).json()
    assert (missing["code"], missing["table"], missing["column"], missing["schema"]) == (
        "23502",
        "checked",
        "n",
        "public",
    )
    negative = post_sql(gateway.url, app_url, {"query": "INSERT INTO checked VALUES (-1)"}).json()
    assert (negative["code"], negative["constraint"]) == ("23514", "checked_n_check")
    assert negative["detail"].startswith("Failing row contains")


def test_error_inside_a_function_reports_where_and_internal_query(
    gateway: Gateway, app_url: str
) -> None:
    query = "DO $$ BEGIN EXECUTE 'SELECT 1/0'; END $$"
    body = post_sql(gateway.url, app_url, {"query": query}).json()
    assert body["code"] == "22012"
    assert "PL/pgSQL" in body["where"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"query": 5}', '"query" must be a string'),
        (b'{"params": []}', '"query" must be a string'),
        (b'{"query": "SELECT 1", "params": "x"}', '"params" must be an array'),
        (b'{"query": "SELECT 1", "arrayMode": "yes"}', '"arrayMode" must be true or false'),
        (b'{"queries": {"query": "SELECT 1"}}', '"queries" must be an array'),
        (b'{"queries": [5]}', "queries[0] must be an object"),
        (b'{"query": "   "}', "query is empty"),
    ],
)
def test_malformed_body_answers_400_with_a_message(
    gateway: Gateway, app_url: str, body: bytes, fragment: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/sql", content=body, headers={"Neon-Connection-String": app_url}
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing Neon-Connection-String"),
        ({"Neon-Connection-String": "mysql://u:p@h/db"}, "must start with postgres://"),
        ({"Neon-Connection-String": "postgresql://h/db"}, "has no user name"),
        ({"Neon-Connection-String": "postgresql://u:p@h:notaport/db"}, "not a valid URL"),
        ({"Authorization": "Basic abc"}, "Bearer"),
    ],
)
def test_bad_connection_headers_answer_400(
    gateway: Gateway, app_url: str, headers: dict[str, str], fragment: str
) -> None:
    sent = {"Neon-Connection-String": app_url, **headers} if "Authorization" in headers else headers
    response = httpx.post(f"{gateway.url}/sql", json={"query": "SELECT 1"}, headers=sent)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Neon-Batch-Isolation-Level", "Chaos"),
        ("Neon-Batch-Isolation-Level", "serializable"),
        ("Neon-Batch-Read-Only", "yes"),
        ("Neon-Batch-Deferrable", "1"),
    ],
)
def test_bad_batch_header_answers_400_naming_what_is_allowed(
    gateway: Gateway, app_url: str, header: str, value: str
) -> None:
    response = post_sql(
        gateway.url, app_url, {"queries": [{"query": "SELECT 1"}]}, headers={header: value}
    )
    assert response.status_code == 400
    assert header in response.json()["message"]


@pytest.mark.parametrize(
    "connection_string",
    [
        make_app_url(password="wrong"),
        make_app_url(user="nobody"),
        make_app_url(database="no_such_db"),
        make_app_url(password=""),
    ],
    ids=["wrong password", "unknown user", "unknown database", "empty password"],
)
def test_refused_credentials_answer_28P01_without_saying_which_part_was_wrong(
    gateway: Gateway, connection_string: str
) -> None:
    response = post_sql(gateway.url, connection_string, {"query": "SELECT 1"})
    assert response.status_code == 400
    assert response.json() == {
        "message": "password authentication failed",
        "code": "28P01",
        "severity": "FATAL",
    }


def test_wrong_password_is_refused_even_while_the_pool_holds_good_connections(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    assert post_sql(gateway.url, app_url, {"query": "SELECT 1"}).status_code == 200
    refused = post_sql(gateway.url, make_app_url(password="guess"), {"query": "SELECT 1"})
    assert refused.json()["code"] == "28P01"
    assert post_sql(gateway.url, app_url, {"query": "SELECT 1"}).status_code == 200


def test_bearer_token_is_used_as_the_password(gateway: Gateway, postgres: EmbeddedPostgres) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP ROLE IF EXISTS token_user")
        conn.execute("CREATE ROLE token_user LOGIN PASSWORD 'tok-123'")
    without_password = "postgresql://token_user@db.invalid/appdb"
    ok = post_sql(
        gateway.url,
        without_password,
        {"query": "SELECT 1 AS one"},
        headers={"Authorization": "Bearer tok-123"},
    )
    assert ok.status_code == 200 and ok.json()["rows"] == [{"one": 1}]
    bad = post_sql(
        gateway.url,
        without_password,
        {"query": "SELECT 1"},
        headers={"Authorization": "Bearer nope"},
    )
    assert bad.json()["code"] == "28P01"


def test_request_body_over_the_limit_answers_413(gateways: GatewayFactory, app_url: str) -> None:
    small = gateways("--max-request-bytes", "2000")
    padded = {"query": "SELECT $1::text", "params": ["x" * 3000]}
    response = post_sql(small.url, app_url, padded)
    assert response.status_code == 413
    assert response.json()["message"] == "request is too large (max is 2000 bytes)"
    chunked = httpx.post(
        f"{small.url}/sql",
        headers={"Neon-Connection-String": app_url},
        content=iter([b'{"query": "SELECT 1", "pad": "', b"y" * 3000, b'"}']),
    )
    assert chunked.status_code == 413
    # the whole chunked body in one write: there at once, still measured
    body = b'{"query": "SELECT 1", "pad": "' + b"z" * 3000 + b'"}'
    at_once = raw_exchange(
        small.url,
        b"POST /sql HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        + f"Neon-Connection-String: {app_url}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n",
    )
    assert at_once.split(b" ")[1] == b"413"
    assert post_sql(small.url, app_url, {"query": "SELECT 1"}).status_code == 200


def test_response_over_the_limit_answers_507_and_stops_the_query(
    gateways: GatewayFactory, app_url: str, postgres: EmbeddedPostgres
) -> None:
    """Each row the query produces takes a number from a sequence, so the sequence says
    how much of the 50-million-row result Postgres made before it was stopped."""
    with postgres.admin("appdb") as conn:
        conn.execute("DROP SEQUENCE IF EXISTS runaway_rows")
        conn.execute("CREATE SEQUENCE runaway_rows")
        conn.execute("ALTER SEQUENCE runaway_rows OWNER TO app")
    small = gateways("--max-response-bytes", "100000")
    rows = 50_000_000
    runaway = (
        "SELECT repeat('x', 1000), nextval('runaway_rows')"
        f" FROM generate_series(1, {rows}) /* runaway */"
    )
    response = post_sql(small.url, app_url, {"query": runaway}, timeout=600)
    assert response.status_code == 507
    assert response.json() == {"message": "response is too large (max is 100000 bytes)"}
    assert wait_until_not_running(postgres, "runaway", seconds=60) == 0
    with postgres.admin("appdb") as conn:
        made = conn.execute("SELECT last_value FROM runaway_rows").fetchone()
    assert made is not None and int(str(made[0])) < rows  # stopped, not read to the end
    fits = post_sql(small.url, app_url, {"query": "SELECT g FROM generate_series(1, 100) g"})
    assert fits.status_code == 200


def test_statement_timeout_answers_400_with_57014(gateways: GatewayFactory, app_url: str) -> None:
    impatient = gateways("--statement-timeout", "0.3")
    response = post_sql(impatient.url, app_url, {"query": "SELECT pg_sleep(5)"})
    assert response.status_code == 400
    assert response.json()["code"] == "57014"


def test_pool_exhausted_past_the_wait_limit_answers_503_with_retry_after(
    gateways: GatewayFactory, app_url: str
) -> None:
    tiny = gateways("--pool-size", "1", "--acquire-timeout", "0.3")
    import threading

    holder = threading.Thread(
        target=post_sql, args=(tiny.url, app_url, {"query": "SELECT pg_sleep(1.5)"})
    )
    holder.start()
    time.sleep(0.3)
    response = post_sql(tiny.url, app_url, {"query": "SELECT 1"})
    holder.join()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "no pooled connection became free" in response.json()["message"]


def test_database_down_answers_503_with_retry_after_not_a_hang(
    gateways: GatewayFactory, app_url: str, tmp_path: Path
) -> None:
    nowhere = gateways(upstream=f"postgresql:///?host={tmp_path}&port=5999")
    response = post_sql(nowhere.url, app_url, {"query": "SELECT 1"})
    # the connect failure itself, not a timeout: a socket that is not there
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json() == {"message": "the database is not reachable"}


def test_options_answers_cors_and_other_methods_answer_400(gateway: Gateway) -> None:
    preflight = httpx.options(f"{gateway.url}/sql")
    assert preflight.status_code == 200
    assert preflight.headers["Allow"] == "OPTIONS, POST"
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Neon-Connection-String" in preflight.headers["Access-Control-Allow-Headers"]
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, f"{gateway.url}/sql")
        assert response.status_code == 400
        assert "use POST" in response.json()["message"]


def test_other_methods_on_sql_answer_400_inside_a_transaction_too(gateway: Gateway) -> None:
    """PROTOCOL.md: anything but POST (and OPTIONS) on /sql is 400, whatever the headers."""
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(
            method, f"{gateway.url}/sql", headers={"Poolgate-Transaction": "0.some-id"}
        )
        assert response.status_code == 400
        assert "use POST" in response.json()["message"]
    preflight = httpx.options(f"{gateway.url}/sql", headers={"Poolgate-Transaction": "0.x"})
    assert preflight.status_code == 200 and preflight.headers["Allow"] == "OPTIONS, POST"


def test_every_response_carries_a_distinct_request_id(gateway: Gateway, app_url: str) -> None:
    responses = [
        post_sql(gateway.url, app_url, {"query": "SELECT 1"}),
        post_sql(gateway.url, app_url, {"query": "SELECT 1/0"}),
        httpx.post(f"{gateway.url}/sql", content=b"{"),
        httpx.get(f"{gateway.url}/nowhere"),
        httpx.get(f"{gateway.url}/healthz"),
        httpx.options(f"{gateway.url}/sql"),
    ]
    ids = [r.headers["Neon-Request-Id"] for r in responses]
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == len(ids)
    assert responses[3].status_code == 404
    assert responses[3].headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (
            json.dumps({"query": "SELECT $1::text", "params": [[[[[[[[1]]]]]]]]}).encode(),
            "at most 6 dimensions",
        ),
        (
            json.dumps(
                {"query": "SELECT $1::jsonb", "params": [json.loads("[" * 900 + "]" * 900)]}
            ).encode(),
            "at most 6 dimensions",
        ),
        (
            json.dumps({"query": "SELECT $1::numeric", "params": [1e400]}).encode(),
            "Infinity is not a JSON value",  # Python writes an infinite float so
        ),
    ],
    ids=["deeply nested body", "7-dimensional array", "deep array", "infinity"],
)
def test_pathological_input_answers_400_not_500(
    gateway: Gateway, app_url: str, body: bytes, fragment: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/sql", content=body, headers={"Neon-Connection-String": app_url}, timeout=10
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]


@pytest.mark.parametrize("query", ["COPY (SELECT 1) TO STDOUT", "COPY copy_target FROM STDIN"])
def test_copy_is_refused_quickly_and_the_pool_stays_usable(
    gateways: GatewayFactory, app_url: str, postgres: EmbeddedPostgres, query: str
) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS copy_target (x int)")
        conn.execute("ALTER TABLE copy_target OWNER TO app")
    # had the gateway waited on the server (which waits for COPY data), Postgres's own
    # timeout would have answered first: 57014, not the gateway's refusal
    single = gateways("--pool-size", "1", "--statement-timeout", "2")
    response = post_sql(single.url, app_url, {"query": query})
    assert response.status_code == 400
    assert "COPY is not supported" in response.json()["message"]
    assert post_sql(single.url, app_url, {"query": "SELECT 1"}).status_code == 200


def test_a_nul_byte_in_a_value_is_refused_as_postgres_would_with_22021(
    gateway: Gateway, app_url: str
) -> None:
    response = post_sql(gateway.url, app_url, {"query": "SELECT $1::text", "params": ["a\u0000b"]})
    assert response.status_code == 400
    assert response.json()["code"] == "22021"
    assert response.json()["severity"] == "ERROR"
    assert "NUL" in response.json()["message"]


@pytest.mark.parametrize(
    ("after_complete", "answer"), [(False, Unavailable), (True, OutcomeUnknown)]
)
def test_a_termination_after_the_statement_completed_is_outcome_unknown_not_retry(
    after_complete: bool, answer: type[GatewayError]
) -> None:
    """Seen on ./dev up: backends terminated under 1,500 autocommit inserts, and one
    answered 503 (retry) had committed. Before CommandComplete nothing can have
    committed (503, Retry-After); after it, the commit at Sync may have (504)."""
    fields = {"S": "FATAL", "V": "FATAL", "C": "57P01", "M": "terminating connection"}
    error = translate_error(wire.ServerError(fields, after_complete=after_complete))
    assert type(error) is answer
