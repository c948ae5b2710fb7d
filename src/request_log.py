"""The request log in Postgres (`logs`), written in batches, never on a request's path.

Every answered request leaves one row, written after its answer. Rows are grouped, as
a database groups commits: the first row starts a batch and writes it at once; rows
that arrive while a batch is being written join the next one, which is written as soon
as the previous one is done, in one statement. One client at a time costs one INSERT
per request, as before; under load, one INSERT carries many rows.

Each batch is written by the request that opened it (its "leader"), and every request
waits, in its deferred work (`ctx.waitUntil` in Workers), until the batch holding its
row is written: no request's I/O is left for another request to finish, which workerd
does not allow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from db.client import Database

log = logging.getLogger("worker")

INSERT_ROWS = (
    "INSERT INTO logs (level, message, meta)"
    " SELECT r->>'level', r->>'message', r->'meta' FROM jsonb_array_elements($1::jsonb) AS r"
)


@dataclass(slots=True)
class _Batch:
    rows: list[dict[str, Any]]
    written: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RequestLog:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._open: _Batch | None = None  # taking rows, not yet being written
        self._last: asyncio.Future[None] | None = None  # written when the last batch is

    async def write(self, level: str, message: str, meta: dict[str, Any]) -> None:
        """Returns once the row's batch is written (or failed: a lost log row is logged
        here and never fails the request it describes)."""
        await self.add(level, message, meta)

    def add(self, level: str, message: str, meta: dict[str, Any]) -> Awaitable[None]:
        """The row's deferred work, done once its batch is written: while a batch is
        open, the row joins it at once and what is returned is that batch's being
        written (a future: no task of its own, which in Pyodide is a loop turn or two
        per request); otherwise a coroutine that opens a batch with it and writes it."""
        row = {"level": level, "message": message, "meta": meta}
        if self._open is not None:
            self._open.rows.append(row)
            return asyncio.shield(self._open.written)  # cancelling one waiter cancels no one
        return self._lead(row)

    async def _lead(self, row: dict[str, Any]) -> None:
        if self._open is not None:  # one opened since `add`: the row joins it
            self._open.rows.append(row)
            await asyncio.shield(self._open.written)
            return
        batch = self._open = _Batch([row])
        previous, self._last = self._last, batch.written
        try:
            try:
                if previous is not None:
                    await asyncio.shield(previous)  # rows keep joining this batch meanwhile
            finally:
                self._open = None
            await self._database.execute(INSERT_ROWS, json.dumps(batch.rows))
        except Exception as exc:
            log.warning("could not write %d request log rows: %r", len(batch.rows), exc)
        finally:  # even when cancelled: the rows' other requests must not wait forever
            batch.written.set_result(None)


_LOGS: weakref.WeakKeyDictionary[Database, RequestLog] = weakref.WeakKeyDictionary()


def request_log(database: Database) -> RequestLog:
    """The request log of this database client (one per isolate or host)."""
    found = _LOGS.get(database)
    if found is None:
        found = _LOGS[database] = RequestLog(database)
    return found
