"""The hit lane (hit_lane.HitLane): a known request's fresh hit, answered without a new parse,
is the answer the full path gives, and its password is checked as on the full path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from poolgate.faces.neon_http.hit_lane import _password_at
from psycopg import sql

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_cache import CachedGateway, InProcessGateway, start_cached_gateway
from tests.support.services import APP_PASSWORD

READ: dict[str, Any] = {"query": "SELECT label FROM lane_items WHERE id = $1", "params": [1]}


@pytest.fixture
async def lane(
    postgres: EmbeddedPostgres,
) -> AsyncIterator[tuple[CachedGateway, InProcessGateway]]:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS lane_items")
        conn.execute("CREATE TABLE lane_items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO lane_items VALUES (1, 'one')")
        conn.execute("ALTER TABLE lane_items OWNER TO app")
    client, server = await start_cached_gateway(postgres, "--auth-recheck", "0.05")
    yield client, server
    await client.http.aclose()
    await server.close()


def answered(response: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "neon-request-id"}
    return response.status_code, response.content, headers


async def test_a_known_requests_hit_is_the_answer_the_full_path_gives(
    lane: tuple[CachedGateway, InProcessGateway],
) -> None:
    client, server = lane
    first = await client.sql(READ, ttl=60, tags="items")
    assert first.headers["Poolgate-Cache-Status"] == "miss"
    client.clock.advance(3)
    through_lane = await client.sql(READ, ttl=60, tags="items")
    hits = server.gateway.service.hits
    assert hits is not None and len(hits._known) == 1
    server.gateway.service.hits = None
    full_path = await client.sql(READ, ttl=60, tags="items")
    server.gateway.service.hits = hits
    assert answered(through_lane) == answered(full_path)
    assert through_lane.headers["Poolgate-Cache-Status"] == "ttl"
    assert through_lane.headers["Age"] == "3"


async def test_a_known_request_is_refused_once_its_password_stops_logging_in(
    lane: tuple[CachedGateway, InProcessGateway], postgres: EmbeddedPostgres
) -> None:
    client, _ = lane
    assert (await client.sql(READ, ttl=60)).headers["Poolgate-Cache-Status"] == "miss"
    assert (await client.sql(READ, ttl=60)).headers["Poolgate-Cache-Status"] == "ttl"
    with postgres.admin("appdb") as conn:
        conn.execute("ALTER ROLE app PASSWORD 'changed-meanwhile'")
    try:
        await asyncio.sleep(0.1)  # past --auth-recheck: the password is proved again
        refused = await client.sql(READ, ttl=60)
        assert refused.status_code == 400 and refused.json()["code"] == "28P01"
    finally:
        with postgres.admin("appdb") as conn:
            conn.execute(sql.SQL("ALTER ROLE app PASSWORD {}").format(sql.Literal(APP_PASSWORD)))
    await asyncio.sleep(0.1)
    assert (await client.sql(READ, ttl=60)).headers["Poolgate-Cache-Status"] == "ttl"


async def test_a_bearer_password_is_taken_from_the_authorization_header(
    lane: tuple[CachedGateway, InProcessGateway], postgres: EmbeddedPostgres
) -> None:
    client, _ = lane
    with postgres.admin("appdb") as conn:
        conn.execute("DROP ROLE IF EXISTS lane_bearer")
        conn.execute("CREATE ROLE lane_bearer LOGIN PASSWORD 'bearer-secret'")
        conn.execute("GRANT SELECT ON lane_items TO lane_bearer")
    no_password = "postgresql://lane_bearer@db.invalid/appdb"
    for _ in range(2):
        reply = await client.sql(
            READ,
            ttl=60,
            connection_string=no_password,
            headers={"Authorization": "Bearer bearer-secret"},
        )
        assert reply.status_code == 200, reply.text
    assert reply.headers["Poolgate-Cache-Status"] == "ttl"
    wrong = await client.sql(
        READ, ttl=60, connection_string=no_password, headers={"Authorization": "Bearer guess"}
    )
    assert wrong.status_code == 400 and wrong.json()["code"] == "28P01"


@pytest.mark.parametrize(
    ("connection_string", "password", "found"),
    [
        ("postgresql://ann:secret@h/db", "secret", "secret"),
        ("postgres://ann:p%40ss@h:5432/db?sslmode=require", "p@ss", "p%40ss"),
        ("postgresql://a%3Ab:x:y@h/db", "x:y", "x:y"),
        ("postgresql://ann:a@b@h/db", "a@b", "a@b"),
    ],
)
def test_the_password_is_found_where_the_full_parse_found_it(
    connection_string: str, password: str, found: str
) -> None:
    place = _password_at(connection_string, password)
    assert place is not None and connection_string[place[0] : place[1]] == found


def test_a_password_not_where_expected_is_never_remembered() -> None:
    assert _password_at("postgresql://ann@h/db", "secret") is None
    assert _password_at("postgresql://ann:other@h/db", "secret") is None
