"""Type round trips through the gateway: Postgres text decoded to exact Python values."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from db.client import Database
from devstack.postgres import EmbeddedPostgres

EXPRESSIONS: list[tuple[str, Any]] = [
    ("true", True),
    ("false", False),
    ("(-32768)::int2", -32768),
    ("2147483647::int4", 2147483647),
    ("9007199254740993::int8", 9007199254740993),
    ("12345678901234567890.123456789::numeric", Decimal("12345678901234567890.123456789")),
    ("0.1::float8", 0.1),
    ("1.5::float4", 1.5),
    ("'Infinity'::float8", math.inf),
    ("'-Infinity'::float4", -math.inf),
    ("'tëxt \"q\" \\'::text", 'tëxt "q" \\'),
    ("'v'::varchar(5)", "v"),
    ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("'2024-02-29'::date", date(2024, 2, 29)),
    ("'2024-02-29 13:14:15.123456'::timestamp", datetime(2024, 2, 29, 13, 14, 15, 123456)),
    (
        "'2024-02-29 13:14:15.5+02'::timestamptz",
        datetime(2024, 2, 29, 11, 14, 15, 500000, tzinfo=UTC),
    ),
    ("'infinity'::timestamptz", "infinity"),
    ("'1 day 02:03:04.5'::interval", timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
    ("'-02:00:00'::interval", timedelta(hours=-2)),
    ("'1 year 2 mons -3 days'::interval", timedelta(days=365 + 60 - 3)),
    ("'{\"a\": [1, 2.5, null]}'::json", {"a": [1, 2.5, None]}),
    ('\'[true, {"b": "é"}]\'::jsonb', [True, {"b": "é"}]),
    ("'\\x00ff10'::bytea", b"\x00\xff\x10"),
    ("ARRAY[1, NULL, 3]::int8[]", [1, None, 3]),
    ("'{{1,2},{3,NULL}}'::int4[]", [[1, 2], [3, None]]),
    ("ARRAY['a b', 'c\"d', 'e\\f', NULL, 'NULL', '']", ["a b", 'c"d', "e\\f", None, "NULL", ""]),
    ("ARRAY[1.10, NULL]::numeric[]", [Decimal("1.10"), None]),
    ("ARRAY[true, NULL]", [True, None]),
    ("ARRAY['2024-01-02'::date]", [date(2024, 1, 2)]),
    ("ARRAY['2024-01-02 03:04:05+00'::timestamptz]", [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]),
    (
        "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
        [UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")],
    ),
    ("ARRAY['{\"k\": 1}'::jsonb, NULL]", [{"k": 1}, None]),
    ("ARRAY['\\x01'::bytea]", [b"\x01"]),
    ("ARRAY['1 hour'::interval]", [timedelta(hours=1)]),
    ("'[0:1]={7,8}'::int4[]", [7, 8]),
    ("'192.168.0.1/24'::inet", "192.168.0.1/24"),
    ("'(1,2)'::point", "(1,2)"),
]


@pytest.fixture(scope="module", autouse=True)
def utc(postgres: EmbeddedPostgres) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("ALTER DATABASE appdb SET timezone = 'UTC'")


@pytest.mark.parametrize(("expression", "expected"), EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
async def test_cell_decodes_to_the_exact_python_value(
    database: Database, expression: str, expected: Any
) -> None:
    row = await database.query_one(f"SELECT {expression} AS v, NULL::int AS n")
    assert row == {"v": expected, "n": None}
    assert type(row["v"]) is type(expected)


async def test_nan_decodes_to_a_float_nan(database: Database) -> None:
    row = await database.query_one("SELECT 'NaN'::float8 AS v")
    assert row is not None and math.isnan(row["v"])


PARAMS: list[tuple[str, Any]] = [
    ("int8", 9007199254740993),
    ("numeric", Decimal("0.000000000000000000001")),
    ("float8", 2.5),
    ("bool", False),
    ("text", 'O\'Reilly \\ "quoted"'),
    ("uuid", UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("date", date(1999, 12, 31)),
    ("timestamp", datetime(2000, 1, 1, 0, 0, 0, 1)),
    ("timestamptz", datetime(2000, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))),
    ("interval", timedelta(days=2, seconds=3.25)),
    ("jsonb", {"nested": {"list": [1, "two", None]}}),
    ("bytea", b"\x00binary\xff"),
    ("int4[]", [1, None, 3]),
    ("text[]", ["a,b", "{c}", None, ""]),
    ("int4[]", [[1, 2], [3, 4]]),
]


@pytest.mark.parametrize(("cast", "value"), PARAMS, ids=[p[0] for p in PARAMS])
async def test_param_round_trips_through_postgres(
    database: Database, cast: str, value: Any
) -> None:
    row = await database.query_one(f"SELECT $1::{cast} AS v", value)
    assert row == {"v": value}
    assert row is not None and row["v"] is not None


async def test_transaction_results_come_back_per_statement(database: Database) -> None:
    from db.client import Isolation, sql

    results = await database.batch(
        [
            sql("SELECT $1::int AS a", 1),
            sql("SELECT $1::text AS b", "x"),
            sql("SHOW transaction_isolation"),
        ],
        isolation=Isolation.SERIALIZABLE,
        read_only=True,
    )
    assert [r.rows for r in results] == [
        [{"a": 1}],
        [{"b": "x"}],
        [{"transaction_isolation": "serializable"}],
    ]
    assert [r.command for r in results] == ["SELECT", "SELECT", "SHOW"]
