"""Interactive transactions over HTTP: one reserved pooled connection per transaction,
from `POST /transaction` to commit, rollback or expiry (PROTOCOL.md, "Interactive
transactions").

- The connection is taken from the (user, database) pool, so it counts against
  `--pool-size`, and no other request uses it until the transaction ends.
- An id is 192 random bits behind `id_prefix` (the owning worker's index, see app, and
  with --advertise-url the replica's name, see replicas); it is bound to the
  credentials that opened it: another password, user or database gets the same 404 as
  an unknown id.
- One call at a time (409 for a second); a statement that fails leaves the transaction
  aborted, as Postgres does (then only rollback works, commit answers 25P02).
- Expiry: past its timeout an idle transaction is rolled back and its connection goes
  back to the pool; a statement running at that moment is cancelled. Later calls: 410.
  A COMMIT or ROLLBACK sent before the timeout is never decided by it: its answer is
  what Postgres did (200, or its error), or 504 if Postgres did not say in time.
- A client that goes away mid-statement: the statement is cancelled and the connection
  closed, so Postgres rolls the transaction back.
- Every call is answered by its request's deadline (arrival plus the statement timeout
  and a second): `POST /transaction` waits for a connection at most `max_wait_ms` (and
  never past --acquire-timeout), then BEGIN; a statement, COMMIT or ROLLBACK still
  running at the deadline is 504 and the transaction ends with its connection closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from poolgate.config import Settings
from poolgate.core.errors import (
    BadRequest,
    GatewayError,
    NoSuchTransaction,
    OutcomeUnknown,
    QueryFailed,
    TransactionBusy,
    TransactionExpired,
)
from poolgate.core.execute import (
    DRIVER_ERRORS,
    Outcome,
    run_command,
    run_in_transaction,
    translate_error,
)
from poolgate.core.pool import Connection, ConnectionPool, PoolRegistry
from poolgate.core.requests import BatchOptions, Credentials, SqlRequest
from poolgate.core.session_state import RESET_BEFORE, may_change_session

log = logging.getLogger("poolgate.transactions")

DEFAULT_TIMEOUT = 5.0  # seconds, when the client names none
DEFAULT_MAX_WAIT = 2.0  # seconds to wait for a free connection at BEGIN
EXPIRED_KEPT = 10_000  # expired ids remembered (to answer 410 rather than 404)

T = TypeVar("T")


class TransactionAborted(GatewayError):
    """Raised by a commit of a transaction that an earlier error aborted: Postgres rolled
    it back instead."""

    status = 400

    def __init__(self) -> None:
        super().__init__(
            "current transaction is aborted by an earlier error: it was rolled back, not committed"
        )

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "code": "25P02", "severity": "ERROR"}

    @property
    def sqlstate(self) -> str | None:
        return "25P02"


@dataclass(frozen=True, slots=True)
class BeginOptions:
    batch: BatchOptions
    timeout: float
    max_wait: float


def begin_options(batch: BatchOptions, payload: dict[str, Any], settings: Settings) -> BeginOptions:
    """`{"timeout_ms", "max_wait_ms"}` of a `POST /transaction` body, checked."""
    unknown = set(payload) - {"timeout_ms", "max_wait_ms"}
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}: expected timeout_ms, max_wait_ms")
    timeout = _milliseconds(payload, "timeout_ms", DEFAULT_TIMEOUT)
    if timeout > settings.transaction_timeout_max:
        raise BadRequest(
            f"timeout_ms {round(timeout * 1000)} is over this gateway's maximum of"
            f" {round(settings.transaction_timeout_max * 1000)}"
        )
    return BeginOptions(batch, timeout, _milliseconds(payload, "max_wait_ms", DEFAULT_MAX_WAIT))


def _milliseconds(payload: dict[str, Any], name: str, default: float) -> float:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3_600_000:
        raise BadRequest(f"{name} must be a whole number of milliseconds, 1 to 3600000")
    return value / 1000


@dataclass(slots=True)
class _Open:
    owner: bytes
    pool: ConnectionPool
    connection: Connection
    deadline: float  # loop time at which it expires
    expires_at: datetime
    started: float = field(default_factory=time.perf_counter)
    busy: bool = False
    session_changed: bool = False
    expiry: asyncio.TimerHandle | None = None


class Transactions:
    """This process's open transactions. `on_end(seconds, expired)` reports each one's
    end for the metrics."""

    def __init__(
        self,
        settings: Settings,
        pools: PoolRegistry,
        id_prefix: str = "",
        on_end: Callable[[float, bool], None] | None = None,
    ) -> None:
        self._settings = settings
        self._pools = pools
        self.id_prefix = id_prefix
        self._on_end = on_end
        self._secret = os.urandom(32)
        self._open: dict[str, _Open] = {}
        self._expired: OrderedDict[str, bytes] = OrderedDict()
        self._endings: set[asyncio.Task[None]] = set()

    @property
    def open_count(self) -> int:
        return len(self._open)

    def _owner(self, credentials: Credentials) -> bytes:
        who = "\x00".join((credentials.user, credentials.database, credentials.password or ""))
        return hmac.new(self._secret, who.encode(), hashlib.sha256).digest()

    async def begin(
        self, credentials: Credentials, options: BeginOptions, client: str, deadline: float
    ) -> dict[str, str]:
        pool = self._pools.pool_for(credentials)
        connection = await pool.acquire(
            credentials.password, client, wait=options.max_wait, deadline=deadline
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(
                min(deadline, loop.time() + self._settings.connect_timeout)
            ):
                # an earlier request's nextval must not answer this transaction's currval
                await run_command(connection, RESET_BEFORE)
                await run_command(connection, options.batch.begin_statement())
        except BaseException as exc:
            await pool.release(connection, reusable=False)
            if isinstance(exc, DRIVER_ERRORS):
                raise translate_error(exc) from None
            if isinstance(exc, TimeoutError):
                raise OutcomeUnknown("the database did not answer BEGIN in time") from None
            raise
        transaction_id = self.id_prefix + secrets.token_urlsafe(24)
        expires_at = datetime.now(UTC) + timedelta(seconds=options.timeout)
        opened = _Open(
            self._owner(credentials),
            pool,
            connection,
            loop.time() + options.timeout,
            expires_at,
        )
        opened.expiry = loop.call_at(opened.deadline, self._expire, transaction_id)
        self._open[transaction_id] = opened
        return {
            "id": transaction_id,
            "expires_at": expires_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def _claim(self, transaction_id: str, credentials: Credentials) -> _Open:
        owner = self._owner(credentials)
        found = self._open.get(transaction_id)
        if found is None:
            expired = self._expired.get(transaction_id)
            if expired is not None and hmac.compare_digest(expired, owner):
                raise TransactionExpired()
            raise NoSuchTransaction()
        if not hmac.compare_digest(found.owner, owner):
            raise NoSuchTransaction()
        if found.busy:
            raise TransactionBusy()
        if asyncio.get_running_loop().time() >= found.deadline:  # its timer is due, not run
            self._finish(transaction_id, found, reusable=True, expired=True)
            raise TransactionExpired()
        found.busy = True
        return found

    async def run(
        self, transaction_id: str, credentials: Credentials, request: SqlRequest, deadline: float
    ) -> Outcome:
        """The request's statement(s) inside the transaction, by the request's deadline."""
        opened = self._claim(transaction_id, credentials)
        opened.session_changed |= any(may_change_session(s.query) for s in request.statements)
        try:  # a Postgres error aborts the transaction; it stays open for a rollback
            return await self._within_deadlines(
                transaction_id,
                opened,
                run_in_transaction(opened.connection, request, self._settings.max_response_bytes),
                deadline,
            )
        finally:
            opened.busy = False

    async def commit(self, transaction_id: str, credentials: Credentials, deadline: float) -> None:
        opened = self._claim(transaction_id, credentials)
        try:
            tag = await self._within_deadlines(
                transaction_id,
                opened,
                run_command(opened.connection, "COMMIT"),
                deadline,
                ending=True,
            )
        except QueryFailed:
            # a failed COMMIT (a serialization failure, a deferred constraint) ends it
            self._finish(transaction_id, opened, reusable=True)
            raise
        finally:
            opened.busy = False
        self._finish(transaction_id, opened, reusable=True)
        if tag == "ROLLBACK":  # COMMIT of an aborted transaction rolls it back
            raise TransactionAborted()

    async def rollback(
        self, transaction_id: str, credentials: Credentials, deadline: float
    ) -> None:
        opened = self._claim(transaction_id, credentials)
        try:
            await self._within_deadlines(
                transaction_id,
                opened,
                run_command(opened.connection, "ROLLBACK"),
                deadline,
                ending=True,
            )
        finally:
            opened.busy = False
        self._finish(transaction_id, opened, reusable=True)

    async def _within_deadlines(
        self,
        transaction_id: str,
        opened: _Open,
        work: Awaitable[T],
        deadline: float,
        ending: bool = False,
    ) -> T:
        """Run `work` on the transaction's connection by the request's `deadline` (else
        504) and, unless it is `ending` the transaction (COMMIT, ROLLBACK: once sent, only
        Postgres's answer decides), before the transaction expires (else 410). Any failure
        but a Postgres error ends the transaction: its connection is closed, and Postgres
        rolls it back unless a COMMIT got there first."""
        loop = asyncio.get_running_loop()
        limit = deadline if ending else min(opened.deadline, deadline)
        try:
            async with asyncio.timeout_at(limit):
                return await work
        except QueryFailed:
            raise
        except TimeoutError:
            expired = not ending and loop.time() >= opened.deadline
            self._finish(transaction_id, opened, reusable=False, expired=expired)
            if expired:
                raise TransactionExpired() from None
            if ending:
                raise OutcomeUnknown(
                    "the database did not answer the end of the transaction in time: whether"
                    " it committed is unknown"
                ) from None
            raise OutcomeUnknown(
                "the database did not answer in time: the transaction was rolled back"
            ) from None
        except DRIVER_ERRORS as exc:
            self._finish(transaction_id, opened, reusable=False)
            raise translate_error(exc) from None
        except BaseException:  # the client went away, a limit, a lost connection
            self._finish(transaction_id, opened, reusable=False)
            raise

    def _expire(self, transaction_id: str) -> None:
        opened = self._open.get(transaction_id)
        if opened is None or opened.busy:
            return  # ended already, or the running call expires it at its deadline
        log.info('{"event": "transaction_expired"}')
        self._finish(transaction_id, opened, reusable=True, expired=True)

    def _finish(
        self, transaction_id: str, opened: _Open, reusable: bool, expired: bool = False
    ) -> None:
        """Forget the transaction and give its connection back (in the background): kept
        if `reusable` and idle, else closed (an open transaction dies with it)."""
        if self._open.pop(transaction_id, None) is None:
            return
        if opened.expiry is not None:
            opened.expiry.cancel()
        if expired:
            self._expired[transaction_id] = opened.owner
            while len(self._expired) > EXPIRED_KEPT:
                self._expired.popitem(last=False)
        if self._on_end is not None:
            self._on_end(time.perf_counter() - opened.started, expired)
        task = asyncio.get_running_loop().create_task(self._give_back(opened, reusable))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _give_back(self, opened: _Open, reusable: bool) -> None:
        """A transaction still open on a reusable connection (one that expired idle) is
        rolled back first; the pool keeps the connection only if that leaves it idle (its
        release checks)."""
        connection = opened.connection
        if reusable and not connection.broken and not connection.idle:
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    await run_command(connection, "ROLLBACK")
            except (*DRIVER_ERRORS, TimeoutError):
                reusable = False
        await opened.pool.release(connection, reusable, reset=opened.session_changed)

    async def close(self) -> None:
        """At shutdown: every open transaction is rolled back (its connection closed)."""
        for transaction_id, opened in list(self._open.items()):
            self._finish(transaction_id, opened, reusable=False)
        if self._endings:
            await asyncio.gather(*self._endings, return_exceptions=True)
