"""Pooled upstream connections, one pool per (user, database).

A pool never holds more than `pool_size` server connections: a slot is taken before a
connection is opened or reused, including the connection that checks a new password,
and waiters are served first in, first out. One acquisition waits at most
--acquire-timeout in all (for the pool's slot, the login lane and the gateway's budget
together, or less if it asks), and neither waits nor connects past the request's own
deadline (`Bounds`). A request's credentials are checked against
the password that last authenticated; a different one opens a fresh connection, so
Postgres itself decides whether it is right. That password is trusted for
`--auth-recheck` seconds after Postgres last accepted it; then the next request that
brings it logs in again (one at a time, on a fresh connection it then uses). A refused
re-check (the password was changed, the role may no longer log in) drops the trust and
closes the pool's idle connections, so a revoked password stops working within
`--auth-recheck`. Connections that saw an error, a cancellation or a non-idle end state
are closed, never reused.

Across pools:
- all pools together never hold more than `max_connections` server connections; when
  that budget is spent, the idle connection unused longest (in any pool) is closed to
  make room, so an idle role never locks out a busy one; with none idle, requests wait
  first in, first out, then 503;
- a password that is not the accepted one logs in through a lane of `LOGIN_LANE`
  requests per pool, so a flood of wrong passwords holds at most that many of a
  tenant's slots; failed logins are throttled per client address and per user
  (see throttle): past the limit, 429 without reaching Postgres, except for a password
  Postgres accepted within `--auth-recheck` (here or in a sibling worker), which takes
  neither the lane nor the throttle;
- at most `MAX_POOLS` pools exist; unused ones are dropped to make room for new pairs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from poolgate.config import Settings
from poolgate.core import wire
from poolgate.core.errors import AuthenticationFailed, Unavailable
from poolgate.core.requests import Credentials
from poolgate.core.throttle import LoginThrottle

log = logging.getLogger("poolgate.pool")

Connection = wire.WireConnection

# Postgres refusals at log-in that are about who is connecting (SQLSTATE classes 28 and
# 3D, and 42501 for CONNECT privilege); anything else (too many connections, starting
# up, unreachable) is the upstream being unavailable.
_CREDENTIAL_CLASSES = ("28", "3D")
_NO_CONNECT_PRIVILEGE = "42501"


def classify_connect_error(error: Exception) -> AuthenticationFailed | Unavailable:
    """A failed log-in, from the driver: the one place that decides what it means."""
    if isinstance(error, wire.PasswordRequired):  # the server asked for one: none was sent
        return AuthenticationFailed()
    if isinstance(error, wire.ServerError):
        sqlstate = error.sqlstate or ""
        if sqlstate.startswith(_CREDENTIAL_CLASSES) or sqlstate == _NO_CONNECT_PRIVILEGE:
            return AuthenticationFailed()
    return Unavailable("the database is not reachable", retry_after=2)


def _fit_for_reuse(connection: Connection) -> bool:
    """Open and in no transaction. An idle connection has nothing to say: one the server
    sent something unasked (a termination notice, a shutdown) is broken, not reused."""
    return not connection.broken and connection.idle


LOGIN_LANE = 2  # concurrent checks of a not-yet-accepted password, per pool
MAX_POOLS = 1000  # distinct (user, database) pairs held at once


@dataclass(frozen=True, slots=True)
class Bounds:
    """One acquisition's limits, in event-loop time: waiting for a slot (of the pool, the
    login lane or the gateway's budget) ends at `wait_until` (503), and connecting ends at
    `deadline` too (the request's own deadline: nothing may answer later)."""

    wait_until: float
    deadline: float

    @classmethod
    def of(cls, wait: float, deadline: float | None) -> Bounds:
        now = asyncio.get_running_loop().time()
        end = math.inf if deadline is None else deadline
        return cls(min(now + wait, end), end)

    def waiting_left(self) -> float:
        return self.wait_until - asyncio.get_running_loop().time()

    def left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    def at(self) -> float | None:
        """The deadline for `asyncio.timeout_at` (None: there is none)."""
        return None if self.deadline == math.inf else self.deadline


class ConnectionBudget:
    """Server connections of every pool together: at most `limit`."""

    RECHECK = 0.05  # seconds between looks for idle connections to close, while waiting

    def __init__(self, limit: int, evict: Callable[[], Awaitable[bool]]) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._evict = evict
        self.held = 0

    async def take(self, bounds: Bounds) -> None:
        """A slot for one more server connection: a free one, or one an idle connection
        (in any pool) gives back when it is closed; else wait until `bounds` say, then
        503. Connections that turn idle meanwhile do not free a slot by themselves, so
        the wait looks for them again every `RECHECK` seconds."""
        while True:
            if not self._slots.locked():
                await self._slots.acquire()
                break
            if await self._evict():
                continue  # a slot was given back: take it, unless another request did
            left = bounds.waiting_left()
            if left <= 0:
                raise Unavailable(f"all {self.limit} server connections of the gateway are in use")
            try:
                await asyncio.wait_for(self._slots.acquire(), min(left, self.RECHECK))
                break
            except TimeoutError:
                continue
        self.held += 1

    def give(self) -> None:
        self.held -= 1
        self._slots.release()


@dataclass(frozen=True, slots=True)
class PoolStats:
    user: str
    database: str
    open: int
    in_use: int
    waiting: int


class ConnectionPool:
    """Connections for one (user, database); see the module docstring for the contract."""

    def __init__(
        self,
        credentials: Credentials,
        settings: Settings,
        budget: ConnectionBudget,
        throttle: LoginThrottle,
    ) -> None:
        self.user = credentials.user
        self.database = credentials.database
        self._settings = settings
        self._budget = budget
        self._throttle = throttle
        self._slots = asyncio.Semaphore(settings.pool_size)  # FIFO for waiters
        self._login_lane = asyncio.Semaphore(LOGIN_LANE)
        self._idle: deque[tuple[Connection, float]] = deque()
        self._open = 0
        self._in_use = 0
        self._waiting = 0
        self._salt = os.urandom(16)
        self._verifier: bytes | None = None  # salted digest of the last accepted password
        self._verified_at = 0.0  # when Postgres last accepted it (monotonic)
        self._rechecking = asyncio.Lock()  # one re-check of the password at a time
        self.last_used = time.monotonic()

    def _digest(self, password: str | None) -> bytes:
        return hashlib.blake2b((password or "").encode(), key=self._salt).digest()

    def _knows(self, password: str | None) -> bool:
        """Whether this password is the one Postgres last accepted for this pool."""
        return self._verifier is not None and hmac.compare_digest(
            self._verifier, self._digest(password)
        )

    def accepts(self, password: str | None) -> bool:
        """Whether this password is trusted without a login: the one Postgres last
        accepted for this pool, within the last --auth-recheck seconds."""
        fresh = time.monotonic() - self._verified_at < self._settings.auth_recheck
        return self._knows(password) and fresh

    async def acquire(
        self,
        password: str | None,
        client: str = "unknown",
        wait: float | None = None,
        deadline: float | None = None,
    ) -> Connection:
        """A connection for this password. `wait`: seconds this request may wait for a
        free slot, in all (default and most: --acquire-timeout), then 503; `deadline`:
        the request's own (event-loop time), which no wait or connect outlasts."""
        self.last_used = time.monotonic()
        acquire_timeout = self._settings.acquire_timeout
        bounds = Bounds.of(
            acquire_timeout if wait is None else min(wait, acquire_timeout), deadline
        )
        if self.accepts(password):
            connection = await self._trusted(password, bounds)
        elif self._knows(password):
            connection = await self._recheck(password, client, bounds)
        else:
            connection = await self._log_in(password, client, bounds)
        self._in_use += 1
        return connection

    async def _trusted(self, password: str | None, bounds: Bounds) -> Connection:
        await self._take(self._slots, bounds)
        try:
            return await self._reuse() or await self._connect(password, bounds)
        except BaseException:
            self._slots.release()
            raise

    async def _recheck(self, password: str | None, client: str, bounds: Bounds) -> Connection:
        """The accepted password, trusted for longer than --auth-recheck: logged in with
        again (one request at a time; the others then find it trusted). Refused, the
        pool forgets it and closes its idle connections (opened with it)."""
        await self._take(self._slots, bounds)
        try:
            try:
                async with asyncio.timeout_at(bounds.wait_until):
                    await self._rechecking.acquire()
            except TimeoutError:
                raise Unavailable("no pooled connection became free in time") from None
            try:
                if self.accepts(password):  # re-checked while this request waited
                    return await self._reuse() or await self._connect(password, bounds)
                try:
                    return await self._connect(password, bounds)
                except AuthenticationFailed:
                    self.forget_credentials()
                    self._throttle.distrust(self.user, self.database)
                    await self.close_idle(older_than=0.0)
                    await self._throttle.record_failure(client, self.user, bounds.at())
                    raise
            finally:
                self._rechecking.release()
        except BaseException:
            self._slots.release()
            raise

    async def _log_in(self, password: str | None, client: str, bounds: Bounds) -> Connection:
        """A password this pool does not trust: checked by Postgres through the login
        lane, throttled; unless Postgres accepted it lately (in a sibling worker, or
        before this pool was forgotten): then it logs in as a trusted one would."""
        if self._throttle.vouches(self.user, self.database, password or ""):
            return await self._trusted(password, bounds)
        self._throttle.check(client, self.user)
        await self._take(self._login_lane, bounds)
        try:
            self._throttle.check(client, self.user)  # the limit may have passed meanwhile
            await self._take(self._slots, bounds)
            try:
                if self.accepts(password):  # accepted while this request waited
                    return await self._reuse() or await self._connect(password, bounds)
                return await self._connect(password, bounds)
            except AuthenticationFailed:
                await self._throttle.record_failure(client, self.user, bounds.at())
                self._slots.release()
                raise
            except BaseException:
                self._slots.release()
                raise
        finally:
            self._login_lane.release()

    async def _take(self, slots: asyncio.Semaphore, bounds: Bounds) -> None:
        if not slots.locked():
            await slots.acquire()  # free slot: no timer needed
            return
        self._waiting += 1
        try:
            async with asyncio.timeout_at(bounds.wait_until):  # no extra task, unlike wait_for
                await slots.acquire()
        except TimeoutError:
            raise Unavailable("no pooled connection became free in time") from None
        finally:
            self._waiting -= 1

    async def _reuse(self) -> Connection | None:
        while self._idle:
            connection, _ = self._idle.pop()  # most recently used: warmest caches
            if _fit_for_reuse(connection):
                return connection
            await self._close(connection)
        return None

    async def _connect(self, password: str | None, bounds: Bounds) -> Connection:
        settings = self._settings
        options = {
            "application_name": "poolgate",
            "client_encoding": "UTF8",
            "options": f"-c statement_timeout={round(settings.statement_timeout * 1000)}",
        }
        while self._open >= settings.pool_size and self._idle:
            await self.close_oldest_idle()  # an idle one with another password makes room
        await self._budget.take(bounds)
        try:
            async with asyncio.timeout(max(0.0, min(settings.connect_timeout, bounds.left()))):
                connection = await wire.connect(
                    wire.Target.of(settings.upstream), self.user, self.database, password, options
                )
        except TimeoutError:
            self._budget.give()
            raise Unavailable("timed out connecting to the database", retry_after=2) from None
        except (wire.WireError, wire.ServerError, OSError) as exc:
            self._budget.give()
            raise classify_connect_error(exc) from None
        except BaseException:
            self._budget.give()
            raise
        self._open += 1
        newly_trusted = not self.accepts(password)
        self._verifier = self._digest(password)
        self._verified_at = time.monotonic()
        if newly_trusted:
            try:
                await self._throttle.record_success(
                    self.user, self.database, password or "", bounds.at()
                )
            except BaseException:
                await self._close(connection)
                raise
        return connection

    def release_clean(self, connection: Connection) -> bool:
        """Give back, at once, a connection that needs no reset and is idle; False (and
        nothing done) otherwise: then `release` does it, with its round trips."""
        if self._needs_reset(False) or not _fit_for_reuse(connection):
            return False
        self._in_use -= 1
        self._idle.append((connection, time.monotonic()))
        self._slots.release()
        self.last_used = time.monotonic()
        return True

    def _needs_reset(self, session_may_have_changed: bool) -> bool:
        settings = self._settings
        return bool(settings.reset_query) and (session_may_have_changed or settings.reset_always)

    async def release(
        self,
        connection: Connection,
        reusable: bool,
        reset: bool = True,
    ) -> None:
        """Give a slot back; the connection is kept only if `reusable`, after the reset
        query if `reset` (what ran on it may have changed its session)."""
        self._in_use -= 1
        try:
            if reusable and await self._reset(connection, reset):
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

    async def _reset(self, connection: Connection, reset: bool) -> bool:
        if not _fit_for_reuse(connection):
            return False
        if not self._needs_reset(reset):
            return True
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                await connection.run_script(self._settings.reset_query)
        except (wire.WireError, wire.ServerError, OSError, TimeoutError):
            log.warning("session reset failed; connection discarded")
            return False
        return True

    async def _close(self, connection: Connection) -> None:
        self._open -= 1
        self._budget.give()
        connection.close()

    def oldest_idle_since(self) -> float | None:
        return self._idle[0][1] if self._idle else None

    async def close_oldest_idle(self) -> None:
        if self._idle:
            connection, _ = self._idle.popleft()
            await self._close(connection)

    async def close_idle(self, older_than: float) -> None:
        """Close idle connections unused for `older_than` seconds."""
        cutoff = time.monotonic() - older_than
        keep: deque[tuple[Connection, float]] = deque()
        closing: list[tuple[Connection, float]] = []
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

    def __init__(self, settings: Settings, throttle: LoginThrottle | None = None) -> None:
        self._settings = settings
        self._pools: dict[tuple[str, str], ConnectionPool] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self.budget = ConnectionBudget(settings.max_connections, self._close_one_idle)
        self.throttle = throttle or LoginThrottle(trust_for=settings.auth_recheck)

    def pool_for(self, credentials: Credentials) -> ConnectionPool:
        key = (credentials.user, credentials.database)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= MAX_POOLS:
                self._drop_unused_pools()
            if len(self._pools) >= MAX_POOLS:
                raise Unavailable(f"the gateway holds {MAX_POOLS} (user, database) pools")
            pool = ConnectionPool(credentials, self._settings, self.budget, self.throttle)
            self._pools[key] = pool
        return pool

    def _drop_unused_pools(self) -> None:
        for key, pool in list(self._pools.items()):
            if pool.is_unused:
                pool.forget_credentials()
                del self._pools[key]

    async def _close_one_idle(self) -> bool:
        """Close the idle connection unused longest, in any pool; False if none is idle."""
        candidates = [
            (since, pool)
            for pool in self._pools.values()
            if (since := pool.oldest_idle_since()) is not None
        ]
        if not candidates:
            return False
        await min(candidates, key=lambda found: found[0])[1].close_oldest_idle()
        return True

    @asynccontextmanager
    async def connection(
        self,
        credentials: Credentials,
        client: str = "unknown",
        reset: bool = True,
        deadline: float | None = None,
    ) -> AsyncIterator[Connection]:
        """A connection for the duration of the block, had before `deadline` (the
        request's, event-loop time) or --acquire-timeout, whichever is first (else 503).

        It is returned to its pool after the block in the background, after the reset
        query if `reset` (so the answer is not delayed by it); if the block raised or
        was cancelled, the connection is closed instead.
        """
        pool = self.pool_for(credentials)
        connection = await pool.acquire(credentials.password, client, deadline=deadline)
        reusable = False
        try:
            yield connection
            reusable = True
        finally:
            if not (reusable and not reset and pool.release_clean(connection)):
                task = asyncio.get_running_loop().create_task(
                    pool.release(connection, reusable, reset)
                )
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

    async def authenticate(
        self, credentials: Credentials, client: str = "unknown", deadline: float | None = None
    ) -> None:
        """Prove the credentials without running anything for the caller (cache hits,
        invalidations): free if they are trusted (accepted within --auth-recheck), else
        a fresh login."""
        if not self.pool_for(credentials).accepts(credentials.password):
            async with self.connection(credentials, client, reset=False, deadline=deadline):
                pass  # nothing runs on it: its session is as it was opened

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
