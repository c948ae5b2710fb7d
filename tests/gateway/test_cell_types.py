"""Every listed type, in raw-text mode and in JSON mode, with NULLs, through the gateway."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.services import Gateway, make_app_url
from tests.support.sql import post_sql

# (SQL expression, type OID, raw text cell, JSON-mode cell)
CASES: list[tuple[str, int, str, Any]] = [
    ("true", 16, "t", True),
    ("false", 16, "f", False),
    ("(-32768)::int2", 21, "-32768", -32768),
    ("2147483647::int4", 23, "2147483647", 2147483647),
    ("9007199254740993::int8", 20, "9007199254740993", "9007199254740993"),
    ("1.5::float4", 700, "1.5", 1.5),
    ("0.1::float8", 701, "0.1", 0.1),
    ("'NaN'::float8", 701, "NaN", "NaN"),
    ("'Infinity'::float8", 701, "Infinity", "Infinity"),
    ("'-Infinity'::float4", 700, "-Infinity", "-Infinity"),
    (
        "12345678901234567890.123456789::numeric",
        1700,
        "12345678901234567890.123456789",
        "12345678901234567890.123456789",
    ),
    ("'héllo \"q\" \\ back'::text", 25, 'héllo "q" \\ back', 'héllo "q" \\ back'),
    ("'short'::varchar(10)", 1043, "short", "short"),
    (
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
        2950,
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    ("'2024-02-29'::date", 1082, "2024-02-29", "2024-02-29"),
    (
        "'2024-02-29 13:14:15.123456'::timestamp",
        1114,
        "2024-02-29 13:14:15.123456",
        "2024-02-29 13:14:15.123456",
    ),
    (
        "'2024-02-29 13:14:15.123456+02'::timestamptz",
        1184,
        "2024-02-29 11:14:15.123456+00",
        "2024-02-29 11:14:15.123456+00",
    ),
    ("'1 day 02:03:04.5'::interval", 1186, "1 day 02:03:04.5", "1 day 02:03:04.5"),
    (
        '\'{"a": [1, 2.5], "b": null}\'::json',
        114,
        '{"a": [1, 2.5], "b": null}',
        {"a": [1, 2.5], "b": None},
    ),
    (
        '\'{"b":{"c":"é"}, "a":1}\'::jsonb',
        3802,
        '{"a": 1, "b": {"c": "é"}}',
        {"a": 1, "b": {"c": "é"}},
    ),
    ("'\\x00ff10'::bytea", 17, "\\x00ff10", "\\x00ff10"),
    # one-dimensional arrays, with NULLs and quoting
    ("ARRAY[true, false, NULL]", 1000, "{t,f,NULL}", [True, False, None]),
    ("ARRAY[1, NULL, 3]::int2[]", 1005, "{1,NULL,3}", [1, None, 3]),
    ("ARRAY[1, NULL, -3]", 1007, "{1,NULL,-3}", [1, None, -3]),
    (
        "ARRAY[9007199254740993, NULL]::int8[]",
        1016,
        "{9007199254740993,NULL}",
        ["9007199254740993", None],
    ),
    ("ARRAY[1.5, 'NaN', NULL]::float4[]", 1021, "{1.5,NaN,NULL}", [1.5, "NaN", None]),
    ("ARRAY[0.25, '-Infinity']::float8[]", 1022, "{0.25,-Infinity}", [0.25, "-Infinity"]),
    ("ARRAY[1.10, NULL]::numeric[]", 1231, "{1.10,NULL}", ["1.10", None]),
    (
        "ARRAY['a b', 'c\"d', 'e\\f', NULL, 'NULL', '', '{x}']::text[]",
        1009,
        '{"a b","c\\"d","e\\\\f",NULL,"NULL","","{x}"}',
        ["a b", 'c"d', "e\\f", None, "NULL", "", "{x}"],
    ),
    ("ARRAY['v', NULL]::varchar[]", 1015, "{v,NULL}", ["v", None]),
    (
        "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
        2951,
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    ),
    ("ARRAY['2024-01-02'::date, NULL]", 1182, "{2024-01-02,NULL}", ["2024-01-02", None]),
    (
        "ARRAY['2024-01-02 03:04:05'::timestamp]",
        1115,
        '{"2024-01-02 03:04:05"}',
        ["2024-01-02 03:04:05"],
    ),
    (
        "ARRAY['2024-01-02 03:04:05+00'::timestamptz]",
        1185,
        '{"2024-01-02 03:04:05+00"}',
        ["2024-01-02 03:04:05+00"],
    ),
    ("ARRAY['1 hour'::interval]", 1187, "{01:00:00}", ["01:00:00"]),
    ("ARRAY['{\"a\":1}'::json, NULL]", 199, '{"{\\"a\\":1}",NULL}', [{"a": 1}, None]),
    ("ARRAY['[1,\"x\"]'::jsonb]", 3807, '{"[1, \\"x\\"]"}', [[1, "x"]]),
    ("ARRAY['\\x01'::bytea, NULL]", 1001, '{"\\\\x01",NULL}', ["\\x01", None]),
    # two-dimensional arrays and a non-default lower bound
    ("'{{1,2},{3,NULL}}'::int4[]", 1007, "{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
    (
        '\'{{"a b",c},{NULL,"}"}}\'::text[]',
        1009,
        '{{"a b",c},{NULL,"}"}}',
        [["a b", "c"], [None, "}"]],
    ),
    ("'{{t,f},{f,t}}'::bool[]", 1000, "{{t,f},{f,t}}", [[True, False], [False, True]]),
    ("'{{1.5,NaN}}'::float8[]", 1022, "{{1.5,NaN}}", [[1.5, "NaN"]]),
    ("'[0:1]={7,8}'::int4[]", 1007, "[0:1]={7,8}", [7, 8]),
    ("'{}'::int4[]", 1007, "{}", []),
]

NULL_TYPES = [
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "uuid",
    "date",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "bytea",
    "int4[]",
    "text[]",
    "jsonb[]",
    "int4[][]",
]


@pytest.fixture(scope="module", autouse=True)
def utc_database(postgres: EmbeddedPostgres) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("ALTER DATABASE appdb SET timezone = 'UTC'")


@pytest.mark.parametrize(("expression", "oid", "raw", "as_json"), CASES, ids=[c[0] for c in CASES])
def test_cell_is_postgres_text_in_raw_mode_and_typed_json_otherwise(
    gateway: Gateway, app_url: str, expression: str, oid: int, raw: str, as_json: Any
) -> None:
    body = {"query": f"SELECT {expression} AS v"}
    raw_answer = post_sql(gateway.url, app_url, body, raw=True).json()
    json_answer = post_sql(gateway.url, app_url, body).json()
    assert raw_answer["fields"][0]["dataTypeID"] == oid
    assert raw_answer["rows"] == [{"v": raw}]
    assert json_answer["rows"] == [{"v": as_json}]


@pytest.mark.parametrize("type_name", NULL_TYPES)
def test_null_is_json_null_in_both_modes_for_every_type(
    gateway: Gateway, app_url: str, type_name: str
) -> None:
    body = {"query": f"SELECT NULL::{type_name} AS v, ARRAY[NULL]::{type_name.rstrip('[]')}[] AS a"}
    for raw in (True, False):
        answer = post_sql(gateway.url, app_url, body, raw=raw, array_mode=True).json()
        assert answer["rows"][0][0] is None
        assert answer["rows"][0][1] == ("{NULL}" if raw else [None])


def test_bytes_that_are_not_utf8_in_a_sql_ascii_database_are_refused_by_postgres_as_22021(
    gateway: Gateway, postgres: EmbeddedPostgres
) -> None:
    """SQL_ASCII stores bytes unconverted; the gateway asks for UTF8, so Postgres checks
    what it sends and refuses such a value itself: a clear 400, and the pool goes on."""
    with postgres.admin() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'bytes_db'").fetchone():
            admin.execute(
                "CREATE DATABASE bytes_db ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0 OWNER app"
            )
    url = make_app_url(database="bytes_db")
    latin1 = "SELECT convert_from('\\x636166e9'::bytea, 'SQL_ASCII') AS latin1"
    response = post_sql(gateway.url, url, {"query": latin1})
    assert response.status_code == 400
    assert response.json()["code"] == "22021"
    assert "0xe9" in response.json()["message"]
    assert post_sql(gateway.url, url, {"query": "SELECT 'plain' AS ascii"}).json()["rows"] == [
        {"ascii": "plain"}
    ]
