"""No session state crosses from one request to the next on a pooled connection, while
the reset query runs only after statements that may have changed the session.

Every test runs on a pool of one connection, and checks by `pg_backend_pid()` that the
next request really ran on the same server session.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import Gateway, GatewayFactory
from tests.support.sql import post_sql

ROLE = "session_user_t"


@pytest.fixture(scope="module")
def role_url(postgres: EmbeddedPostgres) -> Iterator[str]:
    url = make_role(postgres, ROLE)
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS session_items")
        conn.execute("DROP SEQUENCE IF EXISTS session_seq")
        conn.execute("CREATE TABLE session_items (id int GENERATED ALWAYS AS IDENTITY, label text)")
        conn.execute("CREATE SEQUENCE session_seq")
        conn.execute(f"GRANT ALL ON session_items, session_seq TO {ROLE}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}")
        conn.execute(
            "CREATE OR REPLACE FUNCTION session_tagger() RETURNS int LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM set_config('application_name', 'tagged', false); RETURN 1; END $$"
        )
    yield url


@pytest.fixture(scope="module")
def single(gateways: GatewayFactory) -> Gateway:
    return gateways("--pool-size", "1")


def run(gateway: Gateway, url: str, query: str) -> Any:
    reply = post_sql(gateway.url, url, {"query": query}, array_mode=True)
    return reply.json()


def backend_pid(gateway: Gateway, url: str) -> int:
    return int(run(gateway, url, "SELECT pg_backend_pid()")["rows"][0][0])


# (what one request leaves behind, what the next request asks, what a fresh session answers)
LEFT_BEHIND = [
    ("SET search_path = nowhere", "SHOW search_path", '"$user", public'),
    (
        "SELECT set_config('application_name', 'leaked', false)",
        "SELECT current_setting('application_name')",
        "poolgate",
    ),
    ("PREPARE leaked AS SELECT 1", "SELECT count(*) FROM pg_prepared_statements", "0"),
    ("LISTEN leaked", "SELECT count(*) FROM pg_listening_channels()", "0"),
    (
        "CREATE TEMP TABLE leaked (x int)",
        "SELECT count(*) FROM pg_class WHERE relname = 'leaked' AND relpersistence = 't'",
        "0",
    ),
    (
        "SELECT * INTO TEMP leaked_into FROM generate_series(1, 2)",
        "SELECT count(*) FROM pg_class WHERE relname = 'leaked_into'",
        "0",
    ),
    (
        "SELECT pg_advisory_lock(4242)",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        "0",
    ),
    (
        "DECLARE leaked CURSOR WITH HOLD FOR SELECT 1",
        "SELECT count(*) FROM pg_cursors WHERE name = 'leaked'",
        "0",
    ),
]


@pytest.mark.parametrize(("change", "probe", "fresh"), LEFT_BEHIND)
def test_what_a_request_leaves_in_its_session_is_gone_for_the_next_request(
    single: Gateway, role_url: str, change: str, probe: str, fresh: str
) -> None:
    pid = backend_pid(single, role_url)
    assert "rows" in run(single, role_url, change)
    assert run(single, role_url, probe)["rows"] == [[fresh]]
    assert backend_pid(single, role_url) == pid  # the same session, reset, not replaced


@pytest.mark.parametrize("reader", ["SELECT currval('session_seq')", "SELECT lastval()"])
def test_sequence_values_of_an_earlier_request_are_not_visible_through_currval_or_lastval(
    single: Gateway, role_url: str, reader: str
) -> None:
    pid = backend_pid(single, role_url)
    assert run(single, role_url, "SELECT nextval('session_seq')")["rows"]
    assert run(single, role_url, "INSERT INTO session_items (label) VALUES ('a')")["rowCount"] == 1
    assert backend_pid(single, role_url) == pid  # the session that made them (not reset)
    refused = run(single, role_url, reader)
    assert refused["code"] == "55000", refused  # "not yet defined in this session"


def test_a_request_still_reads_the_sequence_values_it_made_itself(
    single: Gateway, role_url: str
) -> None:
    run(single, role_url, "SELECT nextval('session_seq')")
    batch = {
        "queries": [
            {"query": "SELECT nextval('session_seq')::text"},
            {"query": "SELECT currval('session_seq')::text"},
        ]
    }
    reply = post_sql(single.url, role_url, batch, array_mode=True).json()
    made, read = (result["rows"][0][0] for result in reply["results"])
    assert made == read


def last_query_of_the_idle_session(postgres: EmbeddedPostgres, user: str) -> str:
    """What the pooled session ran last (pg_stat_activity keeps it while idle), once the
    connection is back in its pool (the release, with its reset, runs after the answer)."""
    deadline = time.monotonic() + 30  # a wait for the release, not a measurement of it
    while time.monotonic() < deadline:
        with postgres.admin("appdb") as conn:
            row = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE usename = %s AND state = 'idle'",
                [user],
            ).fetchone()
        if row is not None and "pg_stat_activity" not in str(row[0]):
            return str(row[0])
        time.sleep(0.02)
    raise AssertionError("the pooled session never went idle")


def test_plain_reads_and_writes_skip_the_reset_and_session_changes_get_it(
    single: Gateway, role_url: str, postgres: EmbeddedPostgres
) -> None:
    run(single, role_url, "SELECT label FROM session_items /* plain read */")
    assert "plain read" in last_query_of_the_idle_session(postgres, ROLE)
    run(single, role_url, "UPDATE session_items SET label = 'b' /* plain write */")
    assert "plain write" in last_query_of_the_idle_session(postgres, ROLE)
    run(single, role_url, "SET work_mem = '8MB'")
    assert last_query_of_the_idle_session(postgres, ROLE) == "DISCARD ALL"


def test_reset_always_covers_functions_that_change_the_session_from_their_body(
    gateways: GatewayFactory, role_url: str
) -> None:
    """What the text of a statement cannot show (documented): `--reset always` is the
    answer, and under `auto` such a function's change does outlive its request."""
    probe = "SELECT current_setting('application_name')"
    always = gateways("--pool-size", "1", "--reset", "always")
    run(always, role_url, "SELECT session_tagger()")
    assert run(always, role_url, probe)["rows"] == [["poolgate"]]
    auto = gateways("--pool-size", "1")
    run(auto, role_url, "SELECT session_tagger()")
    assert run(auto, role_url, probe)["rows"] == [["tagged"]]
