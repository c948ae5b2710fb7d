"""Pooled upstream connections, one pool per (user, database).

A pool never holds more than `pool_size` server connections: a slot is taken before a
connection is opened or reused, including the connection that checks a new password,
and waiters are served first in, first out. A request's credentials are checked against
the password that last authenticated; a different one opens a fresh connection, so
Postgres itself decides whether it is right. Connections that saw an error, a
cancellation or a non-idle end state are closed, never reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import select
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from poolgate.config import Settings
from poolgate.errors import AuthenticationFailed, Unavailable
from poolgate.protocol import Credentials

log = logging.getLogger("poolgate.pool")

# Postgres refusals at connect time that are about who is connecting; anything else
# (too many connections, starting up, unreachable) is the upstream being unavailable.
_CREDENTIAL_REFUSALS = (
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "not permitted to log in",
    "permission denied for database",
)


def classify_connect_error(error: psycopg.Error) -> AuthenticationFailed | Unavailable:
    """psycopg reports connect failures as text only; this is the one place that reads it."""
    text = str(error)
    if "FATAL:" in text and any(refusal in text for refusal in _CREDENTIAL_REFUSALS):
        return AuthenticationFailed()
    if "no password supplied" in text:  # libpq's own refusal: the server asked for one
        return AuthenticationFailed()
    return Unavailable("the database is not reachable", retry_after=2)


def _looks_alive(connection: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
    """An idle connection has nothing to say: if its socket is readable, the server
    sent something unasked (a termination notice, a shutdown), so it is not reused."""
    if connection.closed or connection.broken:
        return False
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    return not readable


@dataclass(frozen=True, slots=True)
class PoolStats:
    user: str
    database: str
    open: int
    in_use: int
    waiting: int


class ConnectionPool:
    """Connections for one (user, database); see the module docstring for the contract."""

    def __init__(self, credentials: Credentials, settings: Settings) -> None:
        self.user = credentials.user
        self.database = credentials.database
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.pool_size)  # FIFO for waiters
        self._idle: deque[tuple[psycopg.AsyncConnection[tuple[object, ...]], float]] = deque()
        self._open = 0
        self._in_use = 0
        self._waiting = 0
        self._salt = os.urandom(16)
        self._verifier: bytes | None = None  # salted digest of the last accepted password
        self.last_used = time.monotonic()

    def _digest(self, password: str | None) -> bytes:
        return hashlib.blake2b((password or "").encode(), key=self._salt).digest()

    def accepts(self, password: str | None) -> bool:
        """Whether this password is the one Postgres last accepted for this pool."""
        return self._verifier is not None and hmac.compare_digest(
            self._verifier, self._digest(password)
        )

    async def acquire(self, password: str | None) -> psycopg.AsyncConnection[tuple[object, ...]]:
        self.last_used = time.monotonic()
        if self._slots.locked():
            await self._wait_for_slot()
        else:
            await self._slots.acquire()  # free slot: no timer needed
        try:
            connection = await self._reuse() if self.accepts(password) else None
            if connection is None:
                connection = await self._connect(password)
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return connection

    async def _wait_for_slot(self) -> None:
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._settings.acquire_timeout)
        except TimeoutError:
            raise Unavailable(
                f"no pooled connection became free within {self._settings.acquire_timeout:g} s"
            ) from None
        finally:
            self._waiting -= 1

    async def _reuse(self) -> psycopg.AsyncConnection[tuple[object, ...]] | None:
        while self._idle:
            connection, _ = self._idle.pop()  # most recently used: warmest caches
            if _looks_alive(connection):
                return connection
            await self._close(connection)
        return None

    async def _connect(self, password: str | None) -> psycopg.AsyncConnection[tuple[object, ...]]:
        settings = self._settings
        keywords = {
            **settings.upstream,
            "user": self.user,
            "dbname": self.database,
            "connect_timeout": str(max(2, round(settings.connect_timeout))),
            "application_name": "poolgate",
            "options": f"-c statement_timeout={round(settings.statement_timeout * 1000)}",
        }
        if password is not None:
            keywords["password"] = password
        try:
            connection = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    make_conninfo("", **keywords), autocommit=True, prepare_threshold=None
                ),
                settings.connect_timeout,
            )
        except TimeoutError:
            raise Unavailable("timed out connecting to the database", retry_after=2) from None
        except psycopg.Error as exc:
            raise classify_connect_error(exc) from None
        self._open += 1
        if not self.accepts(password):
            self._verifier = self._digest(password)
        return connection

    async def release(
        self, connection: psycopg.AsyncConnection[tuple[object, ...]], reusable: bool
    ) -> None:
        """Give a slot back; the connection is reset and kept only if `reusable`."""
        self._in_use -= 1
        try:
            if reusable and await self._reset(connection):
                self._idle.append((connection, time.monotonic()))
                return
            await self._close(connection)
            if connection.broken:
                # A dead connection usually means the server restarted: the idle ones
                # are dead too, and finding out one request at a time costs an error each.
                await self.close_idle(older_than=0.0)
        finally:
            self._slots.release()
            self.last_used = time.monotonic()

    async def _reset(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
        if connection.closed or connection.info.transaction_status != pq.TransactionStatus.IDLE:
            return False
        if not self._settings.reset_query:
            return True
        try:
            await asyncio.wait_for(
                connection.execute(self._settings.reset_query.encode()),
                self._settings.connect_timeout,
            )
        except (psycopg.Error, TimeoutError):
            log.warning("session reset failed; connection discarded")
            return False
        return True

    async def _close(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._open -= 1
        with suppress(psycopg.Error):
            await connection.close()

    async def close_idle(self, older_than: float) -> None:
        """Close idle connections unused for `older_than` seconds."""
        cutoff = time.monotonic() - older_than
        keep: deque[tuple[psycopg.AsyncConnection[tuple[object, ...]], float]] = deque()
        closing: list[tuple[psycopg.AsyncConnection[tuple[object, ...]], float]] = []
        for connection, since in self._idle:
            (closing if since <= cutoff else keep).append((connection, since))
        self._idle = keep
        for connection, _ in closing:
            await self._close(connection)

    def forget_credentials(self) -> None:
        self._verifier = None

    @property
    def is_unused(self) -> bool:
        return self._open == 0 and self._in_use == 0 and self._waiting == 0

    def stats(self) -> PoolStats:
        return PoolStats(self.user, self.database, self._open, self._in_use, self._waiting)


class PoolRegistry:
    """All pools of this gateway, created on first use and dropped once idle."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[tuple[str, str], ConnectionPool] = {}
        self._releases: set[asyncio.Task[None]] = set()

    def pool_for(self, credentials: Credentials) -> ConnectionPool:
        key = (credentials.user, credentials.database)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = ConnectionPool(credentials, self._settings)
        return pool

    @asynccontextmanager
    async def connection(
        self, credentials: Credentials
    ) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        """A connection for the duration of the block.

        It is reset and returned to its pool after the block in the background (so the
        answer is not delayed by the reset); if the block raised or was cancelled, the
        connection is closed instead.
        """
        pool = self.pool_for(credentials)
        connection = await pool.acquire(credentials.password)
        reusable = False
        try:
            yield connection
            reusable = True
        finally:
            task = asyncio.get_running_loop().create_task(pool.release(connection, reusable))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def authenticate(self, credentials: Credentials) -> None:
        """Prove the credentials without running anything for the caller (cache hits,
        invalidations): free if they are the ones last accepted, else a fresh login."""
        if not self.pool_for(credentials).accepts(credentials.password):
            async with self.connection(credentials):
                pass

    async def sweep(self) -> None:
        """Close connections idle past the timeout; forget pools (and passwords) unused."""
        idle_timeout = self._settings.idle_timeout
        now = time.monotonic()
        for key, pool in list(self._pools.items()):
            await pool.close_idle(older_than=idle_timeout)
            if pool.is_unused and now - pool.last_used > idle_timeout:
                pool.forget_credentials()
                del self._pools[key]

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close_idle(older_than=0.0)
        self._pools.clear()

    def stats(self) -> Iterator[PoolStats]:
        return (pool.stats() for pool in self._pools.values())
