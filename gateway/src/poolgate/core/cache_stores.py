"""Where cached answers live: in this process (bounded in bytes), or in Redis (shared by
every gateway replica, with invalidation seen by all).

Both keep a version counter per tag. A read records the versions of its tags before it
runs the query, and its answer is stored only if none of them moved meanwhile: a write
that invalidated a tag while the read was in flight can never be shadowed by the read's
older answer.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

_ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per entry besides its body and tags
# A tag's version only guards stores: a read records the versions of its tags before it
# runs, and its answer is stored only if they are unchanged (an invalidation deletes the
# entries themselves). So a version must outlive its last bump only as long as a read
# that recorded the version before it can still be running, which ends by its request
# deadline; past that it is forgotten (it reads as 0 again). A day, as it was, kept a
# key per invalidated tag in Redis for a day: one per user created, in the soak test.
MIN_VERSION_SECONDS = 60.0


def version_window(request_deadline: float) -> float:
    """Seconds a tag's version is kept after its last bump, for reads that end by
    `request_deadline` (a background refresh too): twice that, and at least a minute."""
    return max(MIN_VERSION_SECONDS, 2 * request_deadline)


REDIS_TIMEOUT = 1.0  # seconds; a slow cache must not hold requests that could go upstream


class CacheUnavailable(Exception):
    """Raised by a store that cannot be reached (Redis down or too slow)."""


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    created: float  # the gateway clock's seconds when the answer was produced
    ttl: float
    swr: float
    tags: tuple[str, ...]
    row_count: int

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(tag) for tag in self.tags) + _ENTRY_OVERHEAD


class CacheStore(Protocol):
    async def get(self, key: str) -> Entry | None: ...

    async def versions(self, tags: tuple[str, ...]) -> tuple[int, ...]: ...

    async def lookup(self, key: str, tags: tuple[str, ...]) -> tuple[tuple[int, ...], Entry | None]:
        """The tags' versions and the entry, read together (one round trip)."""
        ...

    async def put(self, key: str, entry: Entry, versions: tuple[int, ...], now: float) -> bool:
        """Store unless a tag's version differs from `versions`; True if stored."""
        ...

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        """Drop every entry carrying one of `tags`; the number dropped."""
        ...

    async def bytes_held(self) -> int: ...

    async def purge_expired(self, now: float) -> int:
        """Drop expired entries the store does not expire by itself; the number dropped."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """LRU in this process, bounded by `max_bytes` (entries' bodies, tags and bookkeeping)."""

    def __init__(
        self,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        version_seconds: float = MIN_VERSION_SECONDS,
    ) -> None:
        """`clock` times tag versions' lives (tests pass one they control)."""
        self.max_bytes = max_bytes
        self.version_seconds = version_seconds
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self._versions: dict[str, int] = {}
        self._bumped: dict[str, float] = {}  # tag -> monotonic time of its last bump
        self._bytes = 0

    async def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    async def versions(self, tags: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self._versions.get(tag, 0) for tag in tags)

    async def lookup(self, key: str, tags: tuple[str, ...]) -> tuple[tuple[int, ...], Entry | None]:
        return await self.versions(tags), await self.get(key)

    async def put(self, key: str, entry: Entry, versions: tuple[int, ...], now: float) -> bool:
        if await self.versions(entry.tags) != versions or entry.size > self.max_bytes:
            return False
        self._drop(key)
        self._entries[key] = entry
        self._bytes += entry.size
        for tag in entry.tags:
            self._by_tag.setdefault(tag, set()).add(key)
        self._evict()
        return True

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        dropped = 0
        for tag in tags:
            self._versions[tag] = self._versions.get(tag, 0) + 1
            self._bumped[tag] = self._clock()
            for key in self._by_tag.pop(tag, set()):
                dropped += self._drop(key)
        return dropped

    async def bytes_held(self) -> int:
        return self._bytes

    async def close(self) -> None:
        self._entries.clear()

    def _drop(self, key: str) -> int:
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        self._bytes -= entry.size
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]
        return 1

    def _evict(self) -> None:
        """Least recently used first, until under the bound: O(1) per entry dropped."""
        while self._bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    async def purge_expired(self, now: float) -> int:
        """Drop entries past TTL + SWR and tag versions past `version_seconds` (called
        periodically, off the request path)."""
        expired = [k for k, e in self._entries.items() if now - e.created >= e.ttl + e.swr]
        for key in expired:
            self._drop(key)
        horizon = self._clock() - self.version_seconds
        for tag in [tag for tag, at in self._bumped.items() if at < horizon]:
            del self._bumped[tag]
            self._versions.pop(tag, None)
        return len(expired)

    @property
    def versions_held(self) -> int:
        return len(self._versions)


# Stores the entry only if every tag's version is still the one the reader saw.
_PUT_SCRIPT = """
local versions = cjson.decode(ARGV[3])
for i, tag in ipairs(versions) do
  local current = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  if current ~= tag then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local tag_count = #versions
for i = 1, tag_count do
  local members = KEYS[1 + tag_count + i]
  redis.call('SADD', members, KEYS[1])
  redis.call('PEXPIRE', members, ARGV[2], 'GT')
  if redis.call('PTTL', members) < 0 then redis.call('PEXPIRE', members, ARGV[2]) end
end
return 1
"""

# Bumps each tag's version (kept `version_seconds` after its last bump, ARGV[1] in ms)
# and deletes the entries that carry it.
_INVALIDATE_SCRIPT = """
local dropped = 0
local half = #KEYS / 2
for i = 1, half do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  local members = redis.call('SMEMBERS', KEYS[half + i])
  for _, key in ipairs(members) do dropped = dropped + redis.call('DEL', key) end
  redis.call('DEL', KEYS[half + i])
end
return dropped
"""


class RedisStore:
    """Entries in Redis with an expiry of TTL + SWR; tag versions and tag member sets too."""

    def __init__(
        self, url: str, prefix: str = "poolgate", version_seconds: float = MIN_VERSION_SECONDS
    ) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        self._redis: Any = redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._prefix = prefix
        self.version_seconds = version_seconds
        self._put = self._redis.register_script(_PUT_SCRIPT)
        self._invalidate = self._redis.register_script(_INVALIDATE_SCRIPT)

    def _entry_key(self, key: str) -> str:
        return f"{self._prefix}:entry:{key}"

    def _version_key(self, tag: str) -> str:
        return f"{self._prefix}:version:{tag}"

    def _members_key(self, tag: str) -> str:
        return f"{self._prefix}:members:{tag}"

    async def _call(self, awaitable: Any) -> Any:
        """Every Redis round trip goes through here: failures become CacheUnavailable."""
        try:
            return await awaitable
        except self._errors as exc:
            raise CacheUnavailable(f"redis: {type(exc).__name__}: {exc}") from None

    async def get(self, key: str) -> Entry | None:
        return self._entry(await self._call(self._redis.get(self._entry_key(key))))

    async def lookup(self, key: str, tags: tuple[str, ...]) -> tuple[tuple[int, ...], Entry | None]:
        keys = [*(self._version_key(tag) for tag in tags), self._entry_key(key)]
        *versions, raw = await self._call(self._redis.mget(keys))
        return tuple(int(value or 0) for value in versions), self._entry(raw)

    @staticmethod
    def _entry(raw: bytes | None) -> Entry | None:
        if raw is None:
            return None
        header, _, body = bytes(raw).partition(b"\n")
        meta = json.loads(header)
        return Entry(
            body=body,
            created=meta["created"],
            ttl=meta["ttl"],
            swr=meta["swr"],
            tags=tuple(meta["tags"]),
            row_count=meta["rows"],
        )

    async def versions(self, tags: tuple[str, ...]) -> tuple[int, ...]:
        if not tags:
            return ()
        values = await self._call(self._redis.mget([self._version_key(tag) for tag in tags]))
        return tuple(int(value or 0) for value in values)

    async def put(self, key: str, entry: Entry, versions: tuple[int, ...], now: float) -> bool:
        meta = {
            "created": entry.created,
            "ttl": entry.ttl,
            "swr": entry.swr,
            "tags": list(entry.tags),
            "rows": entry.row_count,
        }
        value = json.dumps(meta).encode() + b"\n" + entry.body
        expiry_ms = max(1, int((entry.created + entry.ttl + entry.swr - now) * 1000))
        keys = [
            self._entry_key(key),
            *(self._version_key(t) for t in entry.tags),
            *(self._members_key(t) for t in entry.tags),
        ]
        stored = await self._call(
            self._put(keys=keys, args=[value, expiry_ms, json.dumps(list(versions))])
        )
        return bool(stored)

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        if not tags:
            return 0
        keys = [*(self._version_key(t) for t in tags), *(self._members_key(t) for t in tags)]
        window_ms = int(self.version_seconds * 1000)
        return int(await self._call(self._invalidate(keys=keys, args=[window_ms])))

    async def purge_expired(self, now: float) -> int:
        return 0  # Redis expires entries itself (PX = TTL + SWR)

    async def bytes_held(self) -> int:
        info = await self._call(self._redis.info("memory"))
        return int(info.get("used_memory_dataset", 0))

    async def close(self) -> None:
        await self._redis.aclose()
