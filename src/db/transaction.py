"""Interactive transactions over HTTP (poolgate's `POST /transaction`), for handlers that
must read, decide in code, then write atomically.

`Database.transaction(...)` gives a `TransactionScope`: `async with` it for one attempt,
or `async for` over it (with `retries=`) to re-run the block after a serialization
failure. Inside, `tx` has the database's `run`/`query`/`query_one`/`execute`; its calls
go one at a time (the endpoint allows no more), through the same transport (`fetch` in
Workers). Committed when the block ends cleanly; rolled back when it raises or is
cancelled; tags given to `invalidate=` (of the scope or of any statement inside) are
dropped at the commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from db.client import (
    ROWS_AS_TEXT,
    Cache,
    Isolation,
    Queries,
    Result,
    Statement,
    batch_headers,
    call_endpoint,
    decoded_answer,
    result_of,
    statement_body,
)
from db.config import DatabaseConfig
from db.errors import (
    DatabaseError,
    ProtocolError,
    QueryError,
    TransactionGone,
    TransactionsUnsupported,
    from_reply,
)
from db.transport import HttpReply, Transport

log = logging.getLogger("worker")

# Conflicts with a concurrent transaction: the same block may well succeed again.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


@dataclass(frozen=True, slots=True)
class TransactionOptions:
    isolation: Isolation | None
    read_only: bool
    deferrable: bool
    timeout: float
    invalidate: tuple[str, ...]


class TransactionCalls:
    """The endpoint's transaction calls, each an HTTP request through the transport."""

    def __init__(self, config: DatabaseConfig, transport: Transport) -> None:
        self._config = config
        self._transport = transport
        self._base = config.endpoint.removesuffix("/sql")

    async def begin(self, options: TransactionOptions) -> str:
        headers = batch_headers(options.isolation, options.read_only, options.deferrable)
        body = {"timeout_ms": max(1, round(options.timeout * 1000))}
        reply = await self._call(f"{self._base}/transaction", body, headers, sent_matters=False)
        if reply.status == 404:
            raise TransactionsUnsupported(self._base)
        if reply.status != 201:
            raise from_reply(reply.status, reply.body)
        try:
            return str(json.loads(reply.body)["id"])
        except (ValueError, KeyError, TypeError):
            raise TransactionsUnsupported(self._base) from None

    async def run(self, transaction_id: str, statement: Statement) -> Result:
        reply = await self._call(
            self._config.endpoint,
            statement_body(statement),
            {"Poolgate-Transaction": transaction_id} | ROWS_AS_TEXT,
            sent_matters=False,  # nothing inside commits before the commit call
        )
        self._raise_for(reply, 200)
        return result_of(*decoded_answer(reply))

    async def commit(self, transaction_id: str, invalidate: tuple[str, ...]) -> None:
        headers = {"Poolgate-Invalidate-Tags": ",".join(invalidate)} if invalidate else {}
        reply = await self._call(f"{self._base}/transaction/{transaction_id}/commit", None, headers)
        self._raise_for(reply, 200)
        if reply.headers.get("poolgate-invalidate-status") == "failed":
            log.warning("the transaction committed but the endpoint could not drop %s", invalidate)

    async def rollback(self, transaction_id: str) -> None:
        url = f"{self._base}/transaction/{transaction_id}/rollback"
        reply = await self._call(url, None, sent_matters=False)
        if reply.status not in (200, 404, 410):  # gone is rolled back too
            raise from_reply(reply.status, reply.body)

    @staticmethod
    def _raise_for(reply: HttpReply, expected: int) -> None:
        if reply.status == expected:
            return
        if reply.status in (404, 410):
            what = "expired" if reply.status == 410 else "is gone (the endpoint lost it)"
            raise TransactionGone(f"the transaction {what}: it was rolled back")
        if reply.status == 409:
            raise ProtocolError("the endpoint saw two calls at once on one transaction")
        raise from_reply(reply.status, reply.body)

    async def _call(
        self,
        url: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None = None,
        *,
        sent_matters: bool = True,
    ) -> HttpReply:
        """Only a commit's lost reply leaves its outcome unknown: before it, nothing of
        the transaction is committed (`sent_matters=False`)."""
        return await call_endpoint(
            self._config, self._transport, url, body, headers, sent_matters=sent_matters
        )


class Transaction(Queries):
    """One interactive transaction: statements run inside it, one call at a time."""

    def __init__(self, calls: TransactionCalls, transaction_id: str) -> None:
        self._calls = calls
        self.id = transaction_id
        self._lock = asyncio.Lock()  # the endpoint takes one call at a time
        self.invalidate: list[str] = []  # tags to drop at the commit

    async def run(
        self, statement: Statement, *, cache: Cache | None = None, invalidate: tuple[str, ...] = ()
    ) -> Result:
        """One statement inside the transaction. `invalidate` tags are dropped when the
        transaction commits; `cache` is refused (a transaction's reads are its own)."""
        if cache is not None:
            raise ValueError("a read inside a transaction cannot be cached")
        self.invalidate += [tag for tag in invalidate if tag not in self.invalidate]
        async with self._lock:
            return await self._calls.run(self.id, statement)


class TransactionScope:
    """What `Database.transaction(...)` returns; see the module docstring."""

    def __init__(
        self, calls: TransactionCalls, options: TransactionOptions, retries: int = 0
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._calls = calls
        self._options = options
        self._retries = retries
        self._current: Transaction | None = None
        self._iterating = False
        self._may_retry = False
        self.retry_wanted = False

    async def __aenter__(self) -> Transaction:
        if self._retries and not self._iterating:
            raise TypeError(
                "retries= re-runs the block: write `async for attempt in db.transaction(...)`"
                " and `async with attempt as tx:` inside it"
            )
        self._current = Transaction(self._calls, await self._calls.begin(self._options))
        return self._current

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Commit after a clean block, else roll back; True (swallow the error) only to
        ask `async for` for another attempt."""
        tx, self._current = self._current, None
        assert tx is not None
        if exc is None:
            tags = (*self._options.invalidate, *tx.invalidate)
            try:
                await self._calls.commit(tx.id, tags)
            except QueryError as failed:  # e.g. a serialization failure found at commit
                if self._retry(failed):
                    return True
                raise
            return False
        try:
            await self._calls.rollback(tx.id)
        except DatabaseError as failed:  # the endpoint rolls it back at expiry anyway
            log.warning("could not roll back transaction: %r", failed)
        return isinstance(exc, QueryError) and self._retry(exc)

    def _retry(self, error: QueryError) -> bool:
        self.retry_wanted = self._may_retry and error.sqlstate in RETRY_SQLSTATES
        return self.retry_wanted

    def __aiter__(self) -> AsyncIterator[TransactionScope]:
        return self._attempts()

    async def _attempts(self) -> AsyncIterator[TransactionScope]:
        self._iterating = True
        try:
            for attempt in range(self._retries + 1):
                self._may_retry = attempt < self._retries
                self.retry_wanted = False
                yield self
                if not self.retry_wanted:
                    return
        finally:
            self._iterating = False
