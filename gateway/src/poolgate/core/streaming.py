"""A cursor that runs one statement and hands its rows over chunk by chunk.

psycopg's own `stream()` yields rows but drops the command tag, refuses statements that
return no rows, and waits on the socket once per chunk. The gateway needs the tag,
needs every statement kind, and needs the rows in chunks so the response limit is
checked while Postgres is still producing them. This drives psycopg's generators (the
ones `execute()` and `stream()` are built from; psycopg is pinned to 3.3) in a single
wait: each chunk goes to a callback as soon as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.generators import cancel, fetch
from psycopg.waiting import wait_async, wait_conn_async

log = logging.getLogger("poolgate.streaming")

_ROWS = (pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.SINGLE_TUPLE)
_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
# The server waits for COPY data (or sends it) instead of finishing: nothing to drain.
_COPY = (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH)
_ACTIVE = pq.TransactionStatus.ACTIVE
CANCEL_TIMEOUT = 1.0  # seconds a cancel request may take before it is abandoned

ChunkCallback = Callable[[pq.abc.PGresult], None]


class ChunkedCursor(psycopg.AsyncRawCursor[tuple[Any, ...]]):
    """Runs statements with `$n` placeholders over the extended protocol."""

    async def run(
        self,
        query: str,
        params: Sequence[str | None],
        rows_per_chunk: int,
        on_chunk: ChunkCallback,
    ) -> tuple[pq.abc.PGresult, bytes]:
        """Run one statement; return its final result and its command tag.

        `on_chunk` sees every chunk of rows in order; an exception it raises stops the
        statement: it is cancelled on the server and the connection is left for the
        caller to discard. So is a cancellation of the awaiting task.
        """
        connection = self._conn
        async with connection.lock:
            try:
                # not connection.wait(): on cancellation it waits up to 10 s for the server
                # to confirm, which a frozen server never does; here a cancelled request
                # ends at once, and its connection is discarded by the caller
                return await wait_async(
                    self._run_gen(query, params, rows_per_chunk, on_chunk),
                    self._pgconn.socket,
                )
            finally:
                if self._pgconn.transaction_status == _ACTIVE:
                    # the caller discards this connection whatever happens, and its
                    # answer (504 at the deadline) must not wait on a frozen server
                    cancel_in_background(self._pgconn)

    def _run_gen(
        self,
        query: str,
        params: Sequence[str | None],
        rows_per_chunk: int,
        on_chunk: ChunkCallback,
    ) -> PQGen[tuple[pq.abc.PGresult, bytes]]:
        yield from self._stream_send_gen(query, params, size=rows_per_chunk)
        final: pq.abc.PGresult | None = None
        tag = b""  # in chunked mode libpq puts the tag on the last chunk, not on the end
        while (result := (yield from fetch(self._pgconn))) is not None:
            status = result.status
            if status in _ROWS:
                tag = result.command_status or tag
                on_chunk(result)
            elif status in _DONE:
                final = result
                tag = result.command_status or tag
            elif status in _COPY:
                raise psycopg.NotSupportedError("COPY is not supported over HTTP")
            else:
                # drain what is left so the connection is idle, then raise; after a FATAL
                # error the server hangs up, and the error it sent is the one to report
                try:
                    while (yield from fetch(self._pgconn)) is not None:
                        pass
                except psycopg.OperationalError:
                    pass
                self._raise_for_result(result)
        if final is None:
            raise psycopg.InterfaceError("the statement ended without a final result")
        return final, tag


_CANCELS: set[asyncio.Task[None]] = set()


def cancel_in_background(pgconn: pq.abc.PGconn) -> None:
    """Ask the server to cancel what runs on `pgconn`, without waiting for it to answer:
    the request is sent at once (libpq 17's non-blocking cancel), its reply awaited in
    the background for at most `CANCEL_TIMEOUT` seconds."""
    try:
        if psycopg.capabilities.has_cancel_safe():
            cancel_conn = pgconn.cancel_conn()
            cancel_conn.start()
            work = _complete_cancel(cancel_conn)
        else:  # an older libpq: the blocking cancel, in a thread
            work = asyncio.wait_for(asyncio.to_thread(pgconn.get_cancel().cancel), CANCEL_TIMEOUT)
    except psycopg.Error as exc:
        log.warning("query cancellation failed: %s", exc)
        return
    task = asyncio.get_running_loop().create_task(_quietly(work))
    _CANCELS.add(task)
    task.add_done_callback(_CANCELS.discard)


async def _complete_cancel(cancel_conn: pq.abc.PGcancelConn) -> None:
    try:
        await wait_conn_async(cancel(cancel_conn), timeout=CANCEL_TIMEOUT)
    finally:
        cancel_conn.finish()


async def _quietly(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception as exc:  # a frozen or vanished server: the connection is gone anyway
        log.info("query cancellation not confirmed: %s", type(exc).__name__)
