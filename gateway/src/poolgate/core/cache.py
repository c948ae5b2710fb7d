"""The query cache: fresh hits, stale-while-revalidate, coalesced misses, invalidation.

Only answers produced inside a read-only transaction are stored (the caller guarantees
it; see app), so a write can never be answered from here. Ages come from an injectable
clock, so tests drive TTL and SWR transitions without sleeping.

Read-after-write, the contract:
- Freshness is the reader's own: an answer is served fresh only while younger than the
  reader's TTL, stale only within the reader's TTL + SWR, whoever stored it.
- The tags a reader names are part of its key (see `cache_policy.cache_key`), so an
  invalidation of any of them drops whatever that reader would be served.
- A reader takes its tags' versions before anything else, and shares an upstream run
  only with readers that saw the same versions. An invalidation bumps the versions
  before its write is answered, so a read that starts after that answer never receives
  data from a query that started before it; reads that may share still do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from poolgate.core.cache_policy import CachePolicy
from poolgate.core.cache_stores import CacheStore, CacheUnavailable, Entry
from poolgate.core.execute import Outcome

log = logging.getLogger("poolgate.cache")

Clock = Callable[[], float]
Upstream = Callable[[], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    outcome: Outcome
    status: str  # "ttl" (fresh hit), "swr" (stale hit), "miss", "none" (store unreachable)
    age: int | None  # whole seconds since the answer was produced, if it is in the cache


@dataclass(slots=True)
class CacheCounters:
    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    invalidations: int = 0
    entries_invalidated: int = 0
    refreshes: int = 0
    upstream_runs: int = 0  # queries the cache actually sent upstream
    store_errors: int = 0  # store round trips that failed (the request went on without it)


class QueryCache:
    def __init__(self, store: CacheStore, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock
        self.counters = CacheCounters()
        self.bytes_held = 0  # as of the last refresh_size()
        # other processes' caches an invalidation must reach too (see siblings)
        self.peers: Callable[[tuple[str, ...]], Awaitable[int]] | None = None
        # (key, tag versions seen when the run started) -> the upstream run
        self._inflight: dict[tuple[str, tuple[int, ...]], asyncio.Task[Outcome]] = {}

    async def answer(
        self, key: str, policy: CachePolicy, tags: tuple[str, ...], upstream: Upstream
    ) -> CachedAnswer:
        """The cached answer for `key` if fresh by the reader's TTL (or stale within its
        SWR, which also starts one background refresh); otherwise the upstream's, shared
        by concurrent readers that saw the same tag versions, and stored for the next
        ones. With the store unreachable, the upstream answers directly (status "none"):
        never a stale read."""
        try:
            versions, entry = await self.store.lookup(key, tags)
        except CacheUnavailable as exc:
            self._store_failed(exc)
            return CachedAnswer(await upstream(), "none", None)
        if entry is not None:
            age = self.clock() - entry.created
            outcome = Outcome(entry.body, entry.row_count)
            if age < policy.ttl:
                self.counters.hits += 1
                return CachedAnswer(outcome, "ttl", int(age))
            if age < policy.ttl + policy.swr:
                self.counters.stale_hits += 1
                self._start(key, versions, policy, tags, upstream, refresh=True)
                return CachedAnswer(outcome, "swr", int(age))
        self.counters.misses += 1
        task = self._start(key, versions, policy, tags, upstream, refresh=False)
        # shielded: a client that goes away does not cancel the work others wait on
        return CachedAnswer(await asyncio.shield(task), "miss", 0)

    async def drain(self) -> None:
        """Let in-flight upstream runs (background refreshes among them) finish, so their
        connections go back to the pools before those close."""
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def purge_expired(self) -> None:
        await self.store.purge_expired(self.clock())

    async def refresh_size(self) -> None:
        try:
            self.bytes_held = await self.store.bytes_held()
        except CacheUnavailable as exc:
            self._store_failed(exc)

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        """Drop tagged entries here and in `peers` (sibling workers' own caches); raises
        CacheUnavailable if the store or a peer cannot be reached."""
        dropped = await self.invalidate_here(tags)
        if self.peers is not None:
            dropped += await self.peers(tags)
        return dropped

    async def invalidate_here(self, tags: tuple[str, ...]) -> int:
        """Drop tagged entries of this process's store only."""
        try:
            dropped = await self.store.invalidate(tags)
        except CacheUnavailable as exc:
            self._store_failed(exc)
            raise
        self.counters.invalidations += 1
        self.counters.entries_invalidated += dropped
        return dropped

    def _start(
        self,
        key: str,
        versions: tuple[int, ...],
        policy: CachePolicy,
        tags: tuple[str, ...],
        upstream: Upstream,
        refresh: bool,
    ) -> asyncio.Task[Outcome]:
        run = (key, versions)
        task = self._inflight.get(run)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._fetch_and_store(key, versions, policy, tags, upstream)
            )
            self._inflight[run] = task
            task.add_done_callback(lambda done: self._finished(run, done, refresh))
            if refresh:
                self.counters.refreshes += 1
        return task

    def _finished(
        self, run: tuple[str, tuple[int, ...]], task: asyncio.Task[Outcome], refresh: bool
    ) -> None:
        self._inflight.pop(run, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so a failure is never "unretrieved"
        if error is not None and refresh:
            log.warning("background refresh failed: %r", error)

    def _store_failed(self, error: CacheUnavailable) -> None:
        self.counters.store_errors += 1
        log.warning("cache store unavailable: %s", error)

    async def _fetch_and_store(
        self,
        key: str,
        versions: tuple[int, ...],
        policy: CachePolicy,
        tags: tuple[str, ...],
        upstream: Upstream,
    ) -> Outcome:
        """Run upstream; store the answer unless a tag moved past `versions` meanwhile."""
        produced = self.clock()
        self.counters.upstream_runs += 1
        outcome = await upstream()
        entry = Entry(outcome.body, produced, policy.ttl, policy.swr, tags, outcome.row_count)
        try:
            await self.store.put(key, entry, versions, self.clock())
        except CacheUnavailable as exc:
            self._store_failed(exc)
        return outcome
