"""Read-after-write through the query cache, under races, in both stores.

The interleavings are driven step by step (an upstream that waits for the test's
signal, a clock the test moves), never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from poolgate.core.cache import QueryCache
from poolgate.core.cache_policy import CachePolicy
from poolgate.core.cache_stores import (
    MIN_VERSION_SECONDS,
    CacheStore,
    MemoryStore,
    RedisStore,
    version_window,
)
from poolgate.core.execute import Outcome


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        yield MemoryStore(1024 * 1024)
        return
    redis = RedisStore(redis_url, prefix=f"raw-{request.node.name}")
    yield redis
    await redis.close()


@dataclass
class Table:
    """A one-row table: a read sees the value as it was when the read started."""

    value: str = "old"
    started: list[asyncio.Event] = field(default_factory=list)
    release: list[asyncio.Event] = field(default_factory=list)

    def reader(self) -> tuple[asyncio.Event, asyncio.Event, Callable[[], Awaitable[Outcome]]]:
        started, release = asyncio.Event(), asyncio.Event()
        self.started.append(started)
        self.release.append(release)

        async def read() -> Outcome:
            seen = self.value  # the snapshot this query reads
            started.set()
            await release.wait()
            return Outcome(seen.encode(), 1)

        return started, release, read


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


READ = CachePolicy(ttl=60, tags=("items",))


async def test_a_read_after_an_invalidation_never_joins_a_query_that_started_before_it(
    store: CacheStore,
) -> None:
    cache = QueryCache(store, Clock())
    table = Table()
    started, release_first, first_query = table.reader()
    first = asyncio.create_task(cache.answer("q", READ, READ.tags, first_query))
    await started.wait()  # the first read's query is running, on the old row
    table.value = "new"  # a write commits ...
    await cache.invalidate(READ.tags)  # ... and is answered 200 once its tags are dropped
    _, release_second, second_query = table.reader()
    release_second.set()
    # bounded only so that joining the first read (the bug) fails instead of hanging
    second = await asyncio.wait_for(cache.answer("q", READ, READ.tags, second_query), 10)
    assert second.outcome.body == b"new"
    release_first.set()
    assert (await first).outcome.body == b"old"  # it started before the write: fair
    third = await cache.answer("q", READ, READ.tags, table.reader()[2])
    assert (third.status, third.outcome.body) == ("ttl", b"new")  # the old answer was not kept


async def test_reads_that_start_together_still_share_one_query(store: CacheStore) -> None:
    cache = QueryCache(store, Clock())
    table = Table()
    started, release, query = table.reader()
    readers = [asyncio.create_task(cache.answer("q", READ, READ.tags, query)) for _ in range(5)]
    await started.wait()
    release.set()
    answers = await asyncio.gather(*readers)
    assert {a.outcome.body for a in answers} == {b"old"}
    assert cache.counters.upstream_runs == 1


def test_a_tag_version_outlives_every_read_that_could_have_seen_it() -> None:
    assert version_window(16.0) == 60.0 == MIN_VERSION_SECONDS
    assert version_window(301.0) == 602.0  # a long --statement-timeout keeps them longer


async def test_tag_versions_are_forgotten_once_no_read_that_saw_them_runs(
    redis_url: str,
) -> None:
    clock = Clock()
    memory = MemoryStore(1024, clock=clock, version_seconds=90.0)
    await memory.invalidate(("old", "recent"))
    clock.now += 90.0 + 1
    await memory.invalidate(("recent",))
    await memory.purge_expired(now=0)
    assert memory.versions_held == 1 and await memory.versions(("recent", "old")) == (2, 0)
    redis = RedisStore(redis_url, prefix="version-ttl", version_seconds=90.0)
    try:
        await redis.invalidate(("tag",))
        ttl_ms = await redis._redis.pttl("version-ttl:version:tag")
        assert 80_000 < ttl_ms <= 90_000  # a minute and a half, no longer a day
    finally:
        await redis.close()
