"""Fresh cache hits of requests seen before, answered without parsing them again.

A hit's largest cost of the gateway's own was parsing the request (its credentials,
body and flags) and hashing its cache key (issue 23, `bench/hit_stages.py`): a request
that is byte for byte one answered through the cache before parses to the same
request, so what the cache needs of it is remembered here. `SqlService.answer` asks
the lane first and teaches it what the full path answered through the cache; both then
ask the cache the same way.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from poolgate.core.requests import Credentials
from poolgate.faces.neon_http.protocol import TRANSACTION_HEADER


@dataclass(frozen=True, slots=True)
class CacheRead:
    """What the cache needs of a request: who asks (a hit needs a login), its key, and
    its tags scoped to the tenant."""

    credentials: Credentials
    key: str
    scoped_tags: tuple[str, ...]


# every header `parse_sql_request` and `cache_key` read: two requests alike in these and
# in their bodies are the same request (the TTL and SWR are read again each time)
_REQUEST_HEADERS = (
    "Neon-Connection-String",
    "Authorization",
    "Neon-Raw-Text-Output",
    "Neon-Array-Mode",
    "Neon-Batch-Isolation-Level",
    "Neon-Batch-Read-Only",
    "Neon-Batch-Deferrable",
    "Poolgate-Cache-Tags",
)


@dataclass(frozen=True, slots=True)
class _Known:
    """What a request already answered through the cache parsed to, but its password,
    which is taken from the same place in the request each time."""

    key: str
    scoped: tuple[str, ...]
    user: str
    database: str
    # its place in the connection string (percent-encoded there); None: the bearer token
    password_at: tuple[int, int] | None


class HitLane:
    """Cache reads of requests seen before, known without parsing them again (issue 23).

    A request whose connection string, other `/sql` headers and body are exactly those
    of one answered through the cache before parses to the same request, so its cache
    key and tags are remembered, keyed by a digest of those bytes (BLAKE2b keyed with a
    secret of this process, so the digests of passwords it holds say nothing outside
    it). The password is never kept: it is read from the request each time, at the
    place it was found in the same connection string, and checked by the pool as on the
    full path. A transaction's call or an invalidation is never known. Used with the
    in-process store only, where it was measured. At most `size` requests are known
    (about 300 bytes each: 5 MiB at the default, beside the cache's own 64 MiB bound),
    the oldest learnt forgotten first: a working set larger than that pays a second
    parse per request that it learns again."""

    def __init__(self, bearer_is_password: bool, size: int = 16384) -> None:
        self._bearer_is_password = bearer_is_password
        self._secret = os.urandom(32)
        self._size = size
        self._known: dict[bytes, _Known] = {}

    def digest(self, headers: Mapping[str, str], body: bytes) -> bytes | None:
        """The request's digest; None for a request the lane never answers."""
        if (
            "Poolgate-Cache-TTL" not in headers
            or TRANSACTION_HEADER in headers
            or "Poolgate-Invalidate-Tags" in headers
        ):
            return None
        material = "\n".join(
            [
                f"{len(value)}:{value}" if (value := headers.get(name)) is not None else "-"
                for name in _REQUEST_HEADERS
            ]
        )
        hashed = hashlib.blake2b(
            material.encode("utf-8", "surrogateescape"), key=self._secret, digest_size=16
        )
        hashed.update(body)
        return hashed.digest()

    def recall(self, digest: bytes, headers: Mapping[str, str]) -> CacheRead | None:
        """The cache read of a known request, with this request's own password."""
        known = self._known.get(digest)
        if known is None:
            return None
        if known.password_at is None:
            password = headers["Authorization"].partition(" ")[2].strip()
        else:
            start, end = known.password_at
            password = headers["Neon-Connection-String"][start:end]
            if "%" in password:
                password = unquote(password)
        credentials = Credentials(user=known.user, password=password, database=known.database)
        return CacheRead(credentials, known.key, known.scoped)

    def knows(self, digest: bytes) -> bool:
        return digest in self._known

    def learn(self, digest: bytes, headers: Mapping[str, str], read: CacheRead) -> None:
        """Remember a request (its cache read, as the full path made it) that the full
        path answered through the cache."""
        credentials = read.credentials
        if credentials.password is None:
            return
        if self._bearer_is_password and "Authorization" in headers:
            password_at = None
        else:
            password_at = _password_at(headers["Neon-Connection-String"], credentials.password)
            if password_at is None:
                return  # percent-encoded, or not where expected: always the full path
        if len(self._known) >= self._size:
            del self._known[next(iter(self._known))]  # the oldest learnt
        self._known[digest] = _Known(
            read.key,
            read.scoped_tags,
            sys.intern(credentials.user),  # one copy per name, however many requests
            sys.intern(credentials.database),
            password_at,
        )


def _password_at(connection_string: str, password: str) -> tuple[int, int] | None:
    """Where `password` stands (percent-encoded or not) in `scheme://user:password@host`,
    if it is found there as the full parse found it."""
    start = connection_string.find("//") + 2
    userinfo = connection_string[start:].partition("/")[0].rpartition("@")[0]
    user, colon, raw = userinfo.partition(":")
    if not colon or unquote(raw) != password:
        return None
    start += len(user) + 1
    return start, start + len(raw)
