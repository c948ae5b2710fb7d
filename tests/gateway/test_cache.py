"""The Accelerate-style query cache, in a real gateway app against real Postgres.

The gateway runs in-process (aiohttp's RawTestServer) so its clock can be moved by the test:
TTL and SWR transitions are driven by that clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import RawTestServer
from poolgate.config import parse_settings
from poolgate.core.cache_stores import Entry, MemoryStore
from poolgate.faces.neon_http.app import Gateway

from devstack.postgres import EmbeddedPostgres
from tests.support.services import make_app_url


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CachedGateway:
    def __init__(self, url: str, clock: ManualClock) -> None:
        self.url = url
        self.clock = clock
        self.http = httpx.AsyncClient(base_url=url, timeout=30)

    async def sql(
        self,
        body: dict[str, Any],
        *,
        ttl: int | None = None,
        swr: int | None = None,
        tags: str | None = None,
        invalidate: str | None = None,
        connection_string: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {
            "Neon-Connection-String": connection_string or make_app_url(),
            "Neon-Array-Mode": "true",
            **(headers or {}),
        }
        for name, value in (
            ("Poolgate-Cache-TTL", ttl),
            ("Poolgate-Cache-SWR", swr),
            ("Poolgate-Cache-Tags", tags),
            ("Poolgate-Invalidate-Tags", invalidate),
        ):
            if value is not None:
                sent[name] = str(value)
        return await self.http.post("/sql", json=body, headers=sent)

    async def metric(self, name: str) -> float:
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not in /metrics")


class InProcessGateway:
    """The gateway on aiohttp's test server, in this process."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.server = RawTestServer(gateway.handle, handler_cancellation=True)

    async def start(self) -> None:
        await self.gateway.start()
        await self.server.start_server()
        self.url = str(self.server.make_url(""))

    async def close(self) -> None:
        await self.server.close()
        await self.gateway.close()


async def start_cached_gateway(
    postgres: EmbeddedPostgres, *options: str
) -> tuple[CachedGateway, InProcessGateway]:
    clock = ManualClock()
    settings = parse_settings(["--upstream", postgres.upstream_url, *options])
    server = InProcessGateway(Gateway(settings, clock=clock))
    await server.start()
    return CachedGateway(server.url, clock), server


@pytest.fixture
async def cached(postgres: EmbeddedPostgres) -> AsyncIterator[CachedGateway]:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS cache_items")
        conn.execute("CREATE TABLE cache_items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO cache_items VALUES (1, 'one')")
        conn.execute("ALTER TABLE cache_items OWNER TO app")
    gateway, server = await start_cached_gateway(postgres)
    yield gateway
    await gateway.http.aclose()
    await server.close()


def set_label(postgres: EmbeddedPostgres, label: str) -> None:
    """Changes the data behind the gateway's back (no invalidation)."""
    with postgres.admin("appdb") as conn:
        conn.execute("UPDATE cache_items SET label = %s WHERE id = 1", [label])


READ_SQL = "SELECT label FROM cache_items WHERE id = $1"
READ: dict[str, Any] = {"query": READ_SQL, "params": [1]}


def status(response: httpx.Response) -> str:
    return response.headers["Poolgate-Cache-Status"]


async def test_without_a_ttl_the_status_is_none_on_every_answer(cached: CachedGateway) -> None:
    plain = await cached.sql(READ)
    failed = await cached.sql({"query": "SELECT 1/0"}, ttl=60)
    assert (status(plain), status(failed)) == ("none", "none")
    assert failed.status_code == 400 and "Age" not in plain.headers


async def test_miss_then_fresh_hit_then_stale_hit_with_refresh_then_miss(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    first = await cached.sql(READ, ttl=10, swr=20)
    assert (status(first), first.headers["Age"], first.json()["rows"]) == ("miss", "0", [["one"]])
    set_label(postgres, "two")
    cached.clock.advance(9)
    fresh = await cached.sql(READ, ttl=10, swr=20)
    assert (status(fresh), fresh.headers["Age"], fresh.json()["rows"]) == ("ttl", "9", [["one"]])
    cached.clock.advance(2)  # age 11: past the TTL, inside the SWR window
    stale = await cached.sql(READ, ttl=10, swr=20)
    assert (status(stale), stale.headers["Age"], stale.json()["rows"]) == ("swr", "11", [["one"]])
    refreshed = None
    for _ in range(100):  # the background refresh finishes on its own; wait for it
        refreshed = await cached.sql(READ, ttl=10, swr=20)
        if refreshed.json()["rows"] == [["two"]]:
            break
        await asyncio.sleep(0.02)
    assert refreshed is not None and status(refreshed) == "ttl"
    assert refreshed.json()["rows"] == [["two"]]
    assert await cached.metric("poolgate_cache_refreshes") == 1
    cached.clock.advance(31)  # past TTL + SWR of the refreshed entry
    assert status(await cached.sql(READ, ttl=10, swr=20)) == "miss"


async def test_a_hit_is_fresh_only_within_the_readers_own_ttl_and_swr(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    assert status(await cached.sql(READ, ttl=3600)) == "miss"
    set_label(postgres, "two")
    cached.clock.advance(6)
    assert (await cached.sql(READ, ttl=3600)).json()["rows"] == [["one"]]  # its TTL allows it
    short = await cached.sql(READ, ttl=5)
    assert (status(short), short.json()["rows"]) == ("miss", [["two"]])
    cached.clock.advance(6)
    stale = await cached.sql(READ, ttl=5, swr=10)
    assert (status(stale), stale.headers["Age"]) == ("swr", "6")


async def test_invalidating_a_tag_the_reader_names_drops_what_it_would_be_served(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    assert status(await cached.sql(READ, ttl=3600)) == "miss"  # no tags
    assert (await cached.sql(READ, ttl=5, tags="items")).json()["rows"] == [["one"]]
    write = await cached.sql(
        {"query": "UPDATE cache_items SET label = 'two' WHERE id = 1"}, invalidate="items"
    )
    assert write.status_code == 200
    cached.clock.advance(1)
    after = await cached.sql(READ, ttl=5, tags="items")
    assert (status(after), after.json()["rows"]) == ("miss", [["two"]])


async def test_without_swr_an_expired_entry_is_a_miss(cached: CachedGateway) -> None:
    await cached.sql(READ, ttl=5)
    cached.clock.advance(5)
    assert status(await cached.sql(READ, ttl=5)) == "miss"


async def test_the_key_covers_sql_params_output_mode_role_and_database(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP ROLE IF EXISTS cache_reader")
        conn.execute("CREATE ROLE cache_reader LOGIN PASSWORD 'reader-pw'")
        conn.execute("GRANT SELECT ON cache_items TO cache_reader")
    await cached.sql(READ, ttl=60)
    assert status(await cached.sql(READ, ttl=60)) == "ttl"
    variants = [
        await cached.sql({**READ, "params": [2]}, ttl=60),
        await cached.sql({**READ, "query": READ_SQL + " "}, ttl=60),
        await cached.sql(READ, ttl=60, headers={"Neon-Raw-Text-Output": "true"}),
        await cached.sql(READ, ttl=60, headers={"Neon-Array-Mode": "false"}),
        await cached.sql(
            READ, ttl=60, connection_string="postgresql://cache_reader:reader-pw@x/appdb"
        ),
        await cached.sql(
            {"query": "SELECT 1"}, ttl=60, connection_string=make_app_url(database="postgres")
        ),
    ]
    assert [status(v) for v in variants] == ["miss"] * len(variants)


async def test_a_write_is_never_answered_from_the_cache(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    insert = {"query": "INSERT INTO cache_items VALUES ($1, 'w') RETURNING id", "params": [7]}
    first = await cached.sql(insert, ttl=60)
    assert (first.status_code, status(first), first.json()["rows"]) == (200, "none", [[7]])
    again = await cached.sql(insert, ttl=60)
    assert again.status_code == 400 and again.json()["code"] == "23505"  # it really ran again
    batch = {"queries": [{"query": "UPDATE cache_items SET label = 'b' WHERE id = 1"}]}
    assert status(await cached.sql(batch, ttl=60)) == "none"
    assert status(await cached.sql(batch, ttl=60)) == "none"
    with postgres.admin("appdb") as conn:
        assert conn.execute("SELECT count(*) FROM cache_items").fetchone() == (2,)


async def test_a_read_only_batch_is_cached(cached: CachedGateway) -> None:
    batch = {"queries": [{"query": "SELECT 1"}, READ]}
    headers = {"Neon-Batch-Read-Only": "true"}
    assert status(await cached.sql(batch, ttl=60, headers=headers)) == "miss"
    hit = await cached.sql(batch, ttl=60, headers=headers)
    assert status(hit) == "ttl" and hit.json()["results"][1]["rows"] == [["one"]]


async def test_a_write_with_invalidate_tags_drops_tagged_reads_after_it_commits(
    cached: CachedGateway,
) -> None:
    await cached.sql(READ, ttl=60, tags="items,item_1")
    other = {"query": "SELECT count(*) FROM cache_items"}
    await cached.sql(other, ttl=60, tags="counts")
    write = {"query": "UPDATE cache_items SET label = 'new' WHERE id = 1"}
    written = await cached.sql(write, invalidate="item_1")
    assert written.status_code == 200
    after = await cached.sql(READ, ttl=60, tags="items,item_1")
    assert (status(after), after.json()["rows"]) == ("miss", [["new"]])
    assert status(await cached.sql(other, ttl=60, tags="counts")) == "ttl"
    assert await cached.metric("poolgate_cache_entries_invalidated") == 1


async def test_a_failed_write_invalidates_nothing(cached: CachedGateway) -> None:
    await cached.sql(READ, ttl=60, tags="items")
    failing = {
        "queries": [
            {"query": "UPDATE cache_items SET label = 'x' WHERE id = 1"},
            {"query": "SELECT 1/0"},
        ]
    }
    assert (await cached.sql(failing, invalidate="items")).status_code == 400
    kept = await cached.sql(READ, ttl=60, tags="items")
    assert (status(kept), kept.json()["rows"]) == ("ttl", [["one"]])


async def test_post_invalidate_drops_tags_for_the_callers_role_only(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP ROLE IF EXISTS cache_other")
        conn.execute("CREATE ROLE cache_other LOGIN PASSWORD 'other-pw'")
    await cached.sql(READ, ttl=60, tags="items")
    other = {"Neon-Connection-String": "postgresql://cache_other:other-pw@x/appdb"}
    refused = await cached.http.post(
        "/invalidate",
        json={"tags": ["items"]},
        headers={"Neon-Connection-String": make_app_url(password="no")},
    )
    assert refused.status_code == 400 and refused.json()["code"] == "28P01"
    foreign = await cached.http.post("/invalidate", json={"tags": ["items"]}, headers=other)
    assert foreign.json() == {"invalidated": 0}
    assert status(await cached.sql(READ, ttl=60, tags="items")) == "ttl"
    own = await cached.http.post(
        "/invalidate", json={"tags": ["items"]}, headers={"Neon-Connection-String": make_app_url()}
    )
    assert own.json() == {"invalidated": 1}
    assert status(await cached.sql(READ, ttl=60, tags="items")) == "miss"


async def test_a_cached_answer_still_requires_the_right_password(cached: CachedGateway) -> None:
    await cached.sql(READ, ttl=60)
    refused = await cached.sql(READ, ttl=60, connection_string=make_app_url(password="guess"))
    assert refused.status_code == 400 and refused.json()["code"] == "28P01"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Poolgate-Cache-TTL": "soon"}, "Poolgate-Cache-TTL"),
        ({"Poolgate-Cache-TTL": "-5"}, "Poolgate-Cache-TTL"),
        ({"Poolgate-Cache-SWR": "10"}, "needs Poolgate-Cache-TTL"),
        ({"Poolgate-Cache-TTL": "5", "Poolgate-Cache-Tags": "ok,not ok"}, "tag 'not ok'"),
        ({"Poolgate-Invalidate-Tags": "x" * 65}, "1-64 letters"),
    ],
)
async def test_bad_cache_headers_answer_400(
    cached: CachedGateway, headers: dict[str, str], fragment: str
) -> None:
    response = await cached.sql(READ, headers=headers)
    assert response.status_code == 400 and fragment in response.json()["message"]


async def test_concurrent_identical_misses_run_the_query_upstream_once(
    cached: CachedGateway, postgres: EmbeddedPostgres
) -> None:
    slow = {"query": "SELECT pg_sleep(0.4), 'coalesced-marker' AS m"}
    highest = 0
    sampling = True

    def sample() -> None:
        nonlocal highest
        with postgres.admin("appdb") as conn:
            while sampling:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE '%%coalesced-marker%%'"
                    " AND pid <> pg_backend_pid()"
                ).fetchone()
                highest = max(highest, int(str(row[0])))  # type: ignore[index]
                time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answers = await asyncio.gather(*(cached.sql(slow, ttl=60) for _ in range(20)))
    finally:
        sampling = False
        sampler.join()
    assert [a.status_code for a in answers] == [200] * 20
    assert {status(a) for a in answers} == {"miss"}
    assert await cached.metric("poolgate_cache_upstream_runs") == 1
    assert highest == 1
    assert status(await cached.sql(slow, ttl=60)) == "ttl"


async def test_the_cache_stays_within_its_byte_bound_under_a_flood(
    postgres: EmbeddedPostgres,
) -> None:
    gateway, server = await start_cached_gateway(postgres, "--cache-max-bytes", "50000")
    try:
        for n in range(300):
            body = {"query": "SELECT repeat('x', 1000) || $1 AS v", "params": [n]}
            assert status(await gateway.sql(body, ttl=600)) == "miss"
            if n % 50 == 0:
                assert await gateway.metric("poolgate_cache_bytes") <= 50000
        assert 0 < await gateway.metric("poolgate_cache_bytes") <= 50000
        newest = {"query": "SELECT repeat('x', 1000) || $1 AS v", "params": [299]}
        oldest = {"query": "SELECT repeat('x', 1000) || $1 AS v", "params": [0]}
        assert status(await gateway.sql(newest, ttl=600)) == "ttl"
        assert status(await gateway.sql(oldest, ttl=600)) == "miss"
    finally:
        await gateway.http.aclose()
        await server.close()


async def test_a_read_that_raced_an_invalidation_is_not_stored() -> None:
    store = MemoryStore(max_bytes=10_000)
    before = await store.versions(("items",))
    await store.invalidate(("items",))  # a write committed while the read was running
    entry = Entry(b"{}", created=0.0, ttl=60, swr=0, tags=("items",), row_count=0)
    assert await store.put("key", entry, before, now=1.0) is False
    assert await store.get("key") is None
    assert await store.put("key", entry, await store.versions(("items",)), now=1.0) is True


async def test_expired_entries_are_purged_off_the_request_path() -> None:
    store = MemoryStore(max_bytes=10_000)
    fresh = Entry(b"a", created=100.0, ttl=10, swr=5, tags=(), row_count=0)
    old = Entry(b"b", created=80.0, ttl=10, swr=5, tags=("t",), row_count=0)
    await store.put("fresh", fresh, (), now=100.0)
    await store.put("old", old, (0,), now=100.0)
    assert await store.purge_expired(now=100.0) == 1
    assert await store.get("old") is None and await store.get("fresh") == fresh
    assert await store.bytes_held() == fresh.size
