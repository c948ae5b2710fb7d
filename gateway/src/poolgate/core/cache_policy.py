"""What a request asks of the cache (the `Poolgate-*` headers), and the cache key.

Tags are scoped to the caller's (role, database): one tenant's invalidation never drops
another's entries, and a key covers everything that changes the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from poolgate.core.errors import BadRequest
from poolgate.core.requests import SqlRequest, is_ascii_number

_TAG = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_TAGS = 32
MAX_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl: int = 0  # seconds an answer is fresh; 0: no caching asked
    swr: int = 0  # seconds past the TTL a stale answer may be served while refreshing
    tags: tuple[str, ...] = ()
    invalidate: tuple[str, ...] = ()

    @property
    def wants_cache(self) -> bool:
        return self.ttl > 0


def parse_cache_policy(headers: Mapping[str, str]) -> CachePolicy:
    ttl = _seconds(headers, "Poolgate-Cache-TTL")
    swr = _seconds(headers, "Poolgate-Cache-SWR")
    if swr and not ttl:
        raise BadRequest("Poolgate-Cache-SWR needs Poolgate-Cache-TTL")
    return CachePolicy(
        ttl=ttl,
        swr=swr,
        tags=_tags(headers, "Poolgate-Cache-Tags"),
        invalidate=_tags(headers, "Poolgate-Invalidate-Tags"),
    )


def parse_tags(values: object, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(tag, str) for tag in values):
        raise BadRequest(f"{where} must be a list of tag strings")
    return checked_tags([tag.strip() for tag in values], where)


def _seconds(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name)
    if raw is None or raw.strip() == "":
        return 0
    text = raw.strip()
    if not is_ascii_number(text) or len(text) > 12 or int(text) > MAX_SECONDS:
        raise BadRequest(f"{name} must be a whole number of seconds from 0 to {MAX_SECONDS}")
    return int(text)


def _tags(headers: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = headers.get(name)
    if not raw:
        return ()
    return checked_tags([tag.strip() for tag in raw.split(",") if tag.strip()], name)


def checked_tags(tags: list[str], where: str) -> tuple[str, ...]:
    """`tags` as given, each checked (and duplicates dropped); BadRequest names `where`."""
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"{where}: at most {MAX_TAGS} tags")
    for tag in tags:
        if not _TAG.match(tag):
            raise BadRequest(f"{where}: tag {tag!r} must be 1-64 letters, digits or underscores")
    return tuple(dict.fromkeys(tags))


def scoped_tags(user: str, database: str, tags: tuple[str, ...]) -> tuple[str, ...]:
    """Tags as stored: prefixed by who owns them."""
    return tuple(f"{len(user)}:{user}/{len(database)}:{database}/{tag}" for tag in tags)


def cache_key(request: SqlRequest, tags: tuple[str, ...] = ()) -> str:
    """A digest of everything that changes the answer: role, database, every statement's
    text and params, row shape, output mode and the batch's transaction options; and the
    tags the reader names, so that invalidating any of them drops what it is served."""
    batch = request.batch
    material = {
        "tags": sorted(tags),
        "user": request.credentials.user,
        "database": request.credentials.database,
        "raw": request.raw_text,
        "batch": None
        if batch is None
        else [batch.isolation.name if batch.isolation else None, batch.read_only, batch.deferrable],
        "statements": [[s.query, list(s.params), s.array_mode] for s in request.statements],
    }
    encoded = json.dumps(material, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()
