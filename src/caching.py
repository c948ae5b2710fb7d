"""Which reads are cached, under which tags, and which writes invalidate them.

Reads of published posts and of a user's posts are cached by the pooled endpoint;
every write that can change one of them invalidates its tag once the write has
committed, so a client that writes and then reads sees its write. A client can opt out
per request with `Cache-Control: no-cache` (or `no-store`).
"""

from __future__ import annotations

import logging

from db.client import Cache, Database, Result
from db.errors import DatabaseError
from web import Request, Response

log = logging.getLogger("worker")

PUBLISHED_POSTS = "published_posts"
FRESH_SECONDS = 30
STALE_SECONDS = 60


def user_posts(user_id: int) -> str:
    # tags are letters, digits and underscores: a (never stored) negative id keeps its sign
    return f"user_{'m' if user_id < 0 else ''}{abs(user_id)}_posts"


def read_cache(request: Request, *tags: str) -> Cache | None:
    """The strategy for a cacheable read, or None when the client opted out."""
    directives = request.headers.get("cache-control", "").lower()
    if "no-cache" in directives or "no-store" in directives:
        return None
    return Cache(ttl=FRESH_SECONDS, swr=STALE_SECONDS, tags=tags)


def with_cache_status(response: Response, result: Result) -> Response:
    """Tell the client how its read was answered, as the endpoint reported it."""
    response.headers["x-cache-status"] = result.cache_status
    if result.age is not None:
        response.headers["age"] = str(result.age)
    return response


async def invalidate_after_write(database: Database, *tags: str) -> None:
    """Drop tags once a write has committed. The write stands whatever happens here, so
    a failure is logged, not raised: the client must not retry a committed write. (With
    the cache store down, reads bypass it, so they cannot be stale meanwhile.)"""
    try:
        await database.invalidate(tags)
    except DatabaseError as exc:
        log.warning("invalidating %s after a committed write failed: %r", tags, exc)
