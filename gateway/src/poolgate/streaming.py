"""A cursor that hands over a statement's result in chunks, then its final status.

psycopg's own `stream()` yields rows but drops the command tag and refuses statements
that return no rows; the gateway needs both, and needs the rows in chunks so the
response-size limit is checked while Postgres is still producing them. This builds on
the same generators `stream()` uses, pinned to psycopg 3.3 in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.generators import fetch

_ROWS = (pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.SINGLE_TUPLE)
_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_ACTIVE = pq.TransactionStatus.ACTIVE


class ChunkedCursor(psycopg.AsyncRawCursor[tuple[Any, ...]]):
    """Runs one statement with `$n` placeholders over the extended protocol."""

    async def chunks(
        self, query: str, params: Sequence[str | None], rows_per_chunk: int
    ) -> AsyncIterator[pq.abc.PGresult]:
        """Yield each chunk of rows, then the final result carrying the command tag.

        The final result is the last item yielded; its status is TUPLES_OK or COMMAND_OK.
        If iteration stops early (an exception, a cancellation), the statement is
        cancelled on the server and the connection is left for the caller to discard.
        """
        connection = self._conn
        async with connection.lock:
            try:
                await connection.wait(self._stream_send_gen(query, params, size=rows_per_chunk))
                while True:
                    result = await connection.wait(fetch(self._pgconn))
                    if result is None:
                        return
                    status = result.status
                    if status in _ROWS:
                        yield result
                    elif status in _DONE:
                        while await connection.wait(fetch(self._pgconn)) is not None:
                            pass
                        yield result
                        return
                    else:
                        self._raise_for_result(result)
            finally:
                if self._pgconn.transaction_status == _ACTIVE:
                    await connection._try_cancel()
