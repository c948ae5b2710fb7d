"""Single queries, batches, parameters, row shapes, fields metadata and command tags."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.services import Gateway
from tests.support.sql import post_sql


@pytest.fixture(scope="module", autouse=True)
def items_table(postgres: EmbeddedPostgres) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, label varchar(10) NOT NULL, "
            "price numeric(10, 2), tags text[])"
        )
        conn.execute("ALTER TABLE items OWNER TO app")


@pytest.fixture(autouse=True)
def empty_items(postgres: EmbeddedPostgres) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("TRUNCATE items")


def count_items(postgres: EmbeddedPostgres) -> int:
    with postgres.admin("appdb") as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_fields_describe_table_columns_with_oids_sizes_and_modifiers(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin("appdb") as conn:
        table_oid = conn.execute("SELECT 'items'::regclass::oid").fetchone()[0]  # type: ignore[index]
    answer = post_sql(
        gateway.url, app_url, {"query": "SELECT id, label, price, 1 AS one FROM items"}
    ).json()
    assert answer["fields"] == [
        {
            "name": "id",
            "dataTypeID": 23,
            "tableID": table_oid,
            "columnID": 1,
            "dataTypeSize": 4,
            "dataTypeModifier": -1,
            "format": "text",
        },
        {
            "name": "label",
            "dataTypeID": 1043,
            "tableID": table_oid,
            "columnID": 2,
            "dataTypeSize": -1,
            "dataTypeModifier": 14,
            "format": "text",
        },
        {
            "name": "price",
            "dataTypeID": 1700,
            "tableID": table_oid,
            "columnID": 3,
            "dataTypeSize": -1,
            "dataTypeModifier": (10 << 16 | 2) + 4,
            "format": "text",
        },
        {
            "name": "one",
            "dataTypeID": 23,
            "tableID": 0,
            "columnID": 0,
            "dataTypeSize": 4,
            "dataTypeModifier": -1,
            "format": "text",
        },
    ]
    assert answer["rows"] == []
    assert (answer["command"], answer["rowCount"]) == ("SELECT", 0)


@pytest.mark.parametrize(
    ("query", "command", "row_count"),
    [
        ("INSERT INTO items VALUES (1, 'a'), (2, 'b')", "INSERT", 2),
        ("UPDATE items SET label = 'z' WHERE id > 100", "UPDATE", 0),
        ("DELETE FROM items", "DELETE", 0),
        ("SELECT * FROM generate_series(1, 2500)", "SELECT", 2500),
        ("CREATE TEMP TABLE scratch (x int)", "CREATE", None),
        ("SET search_path = public", "SET", None),
    ],
)
def test_command_and_row_count_come_from_the_command_tag(
    gateway: Gateway, app_url: str, query: str, command: str, row_count: int | None
) -> None:
    answer = post_sql(gateway.url, app_url, {"query": query}).json()
    assert (answer["command"], answer["rowCount"]) == (command, row_count)


def test_rows_larger_than_one_chunk_all_arrive_in_order(gateway: Gateway, app_url: str) -> None:
    answer = post_sql(
        gateway.url, app_url, {"query": "SELECT g FROM generate_series(1, 2500) g"}, array_mode=True
    ).json()
    assert answer["rows"] == [[g] for g in range(1, 2501)]


def test_rows_are_objects_by_default_and_arrays_with_the_header(
    gateway: Gateway, app_url: str
) -> None:
    body = {"query": "SELECT 1 AS a, 'x' AS b"}
    as_objects = post_sql(gateway.url, app_url, body).json()
    as_arrays = post_sql(gateway.url, app_url, body, array_mode=True).json()
    assert as_objects["rows"] == [{"a": 1, "b": "x"}] and as_objects["rowAsArray"] is False
    assert as_arrays["rows"] == [[1, "x"]] and as_arrays["rowAsArray"] is True


def test_array_mode_in_the_body_overrides_the_header_per_query(
    gateway: Gateway, app_url: str
) -> None:
    body = {"queries": [{"query": "SELECT 1 AS a", "arrayMode": False}, {"query": "SELECT 2 AS a"}]}
    results = post_sql(gateway.url, app_url, body, array_mode=True).json()["results"]
    assert results[0]["rows"] == [{"a": 1}]
    assert results[1]["rows"] == [[2]]
    single = post_sql(gateway.url, app_url, {"query": "SELECT 3 AS a", "arrayMode": True}).json()
    assert single["rows"] == [[3]]


def test_only_the_exact_value_true_turns_raw_text_on(gateway: Gateway, app_url: str) -> None:
    body = {"query": "SELECT 5 AS n"}
    for value in ("True", "1", "yes"):
        answer = post_sql(gateway.url, app_url, body, headers={"Neon-Raw-Text-Output": value})
        assert answer.json()["rows"] == [{"n": 5}]
    assert post_sql(gateway.url, app_url, body, raw=True).json()["rows"] == [{"n": "5"}]


@pytest.mark.parametrize(
    ("param", "text"),
    [
        (None, None),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-1.5, "-1.5"),
        ("plain 'string' \\ é", "plain 'string' \\ é"),
        ({"a": [1, None], "b": "x"}, '{"a":[1,null],"b":"x"}'),
        ([1, None, "a b"], '{1,NULL,"a b"}'),
        ([["x", 'q"uote'], ["back\\slash", ""]], '{{x,"q\\"uote"},{"back\\\\slash",""}}'),
        (["NULL", "null", None], '{"NULL","null",NULL}'),
        ([True, {"k": 1}], '{true,"{\\"k\\":1}"}'),
        ([], "{}"),
    ],
)
def test_params_reach_postgres_as_the_specified_text(
    gateway: Gateway, app_url: str, param: Any, text: str | None
) -> None:
    answer = post_sql(
        gateway.url, app_url, {"query": "SELECT $1::text AS t", "params": [param]}, raw=True
    ).json()
    assert answer["rows"] == [{"t": text}]


def test_array_params_round_trip_through_postgres_arrays(gateway: Gateway, app_url: str) -> None:
    values = ['a"b', "c\\d", "e,f", "{g}", " h ", None]
    answer = post_sql(
        gateway.url,
        app_url,
        {
            "query": "SELECT $1::text[] AS a, $2::int[] AS b",
            "params": [values, [[1, 2], [3, None]]],
        },
    ).json()
    assert answer["rows"] == [{"a": values, "b": [[1, 2], [3, None]]}]


def test_untyped_params_let_postgres_infer_their_types(gateway: Gateway, app_url: str) -> None:
    answer = post_sql(
        gateway.url, app_url, {"query": "SELECT $1 + 1 AS n, $2 = 'x' AS same", "params": [41, "x"]}
    ).json()
    assert answer["rows"] == [{"n": 42, "same": True}]


def test_batch_commits_every_statement_and_answers_each_in_order(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    body = {
        "queries": [
            {"query": "INSERT INTO items (id, label) VALUES ($1, $2)", "params": [1, "one"]},
            {
                "query": "INSERT INTO items (id, label) VALUES ($1, $2) RETURNING id",
                "params": [2, "two"],
            },
            {"query": "SELECT count(*)::int AS n FROM items"},
        ]
    }
    answer = post_sql(gateway.url, app_url, body).json()
    assert [r["command"] for r in answer["results"]] == ["INSERT", "INSERT", "SELECT"]
    assert answer["results"][1]["rows"] == [{"id": 2}]
    assert answer["results"][2]["rows"] == [{"n": 2}]
    assert count_items(postgres) == 2


def test_batch_with_a_failing_third_statement_leaves_nothing_from_the_first_two(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    body = {
        "queries": [
            {"query": "INSERT INTO items (id, label) VALUES (1, 'one')"},
            {"query": "INSERT INTO items (id, label) VALUES (2, 'two')"},
            {"query": "INSERT INTO items (id, label) VALUES (1, 'dup')"},
        ]
    }
    response = post_sql(gateway.url, app_url, body)
    assert response.status_code == 400
    assert response.json()["code"] == "23505"
    assert response.json()["constraint"] == "items_pkey"
    assert count_items(postgres) == 0


@pytest.mark.parametrize(
    ("isolation", "expected"),
    [
        ("Serializable", "serializable"),
        ("RepeatableRead", "repeatable read"),
        ("ReadCommitted", "read committed"),
        ("ReadUncommitted", "read uncommitted"),
    ],
)
def test_batch_isolation_header_sets_the_transaction_isolation(
    gateway: Gateway, app_url: str, isolation: str, expected: str
) -> None:
    body = {"queries": [{"query": "SHOW transaction_isolation"}]}
    answer = post_sql(
        gateway.url,
        app_url,
        body,
        array_mode=True,
        headers={"Neon-Batch-Isolation-Level": isolation},
    ).json()
    assert answer["results"][0]["rows"] == [[expected]]


def test_batch_read_only_and_deferrable_headers_shape_the_transaction(
    gateway: Gateway, app_url: str, postgres: EmbeddedPostgres
) -> None:
    headers = {
        "Neon-Batch-Read-Only": "true",
        "Neon-Batch-Deferrable": "true",
        "Neon-Batch-Isolation-Level": "Serializable",
    }
    body = {
        "queries": [
            {"query": "SHOW transaction_read_only"},
            {"query": "SHOW transaction_deferrable"},
        ]
    }
    answer = post_sql(gateway.url, app_url, body, array_mode=True, headers=headers).json()
    assert [r["rows"] for r in answer["results"]] == [[["on"]], [["on"]]]
    write = {"queries": [{"query": "INSERT INTO items (id, label) VALUES (9, 'nine')"}]}
    refused = post_sql(gateway.url, app_url, write, headers={"Neon-Batch-Read-Only": "true"})
    assert refused.status_code == 400 and refused.json()["code"] == "25006"
    assert count_items(postgres) == 0
    allowed = post_sql(gateway.url, app_url, write, headers={"Neon-Batch-Read-Only": "false"})
    assert allowed.status_code == 200 and count_items(postgres) == 1


def test_session_state_set_by_one_request_is_gone_for_the_next(
    gateway: Gateway, app_url: str
) -> None:
    # Pool size 10: repeat enough times that the same connection is reused.
    for _ in range(12):
        post_sql(gateway.url, app_url, {"query": "SET application_name = 'leaked'"})
        answer = post_sql(gateway.url, app_url, {"query": "SHOW application_name"}, array_mode=True)
        assert answer.json()["rows"] == [["poolgate"]]
