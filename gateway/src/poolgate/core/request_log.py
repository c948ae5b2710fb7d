"""The per-request log: one JSON line per request, written straight to a stream.

It bypasses `logging` (a record, a formatter and a handler lock per line cost more than
the line itself) and is buffered: the lines of one turn of the event loop are written
together, right after it (one write instead of one per request under load); none is
dropped, and `flush` writes what is left at shutdown. Only the client's own text (the
method and path) goes through the JSON encoder; the rest are numbers and names.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import TextIO

_text = json.JSONEncoder(ensure_ascii=False).encode


class RequestLog:
    """`stream`: where lines go; by default whatever `sys.stderr` is at the time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.worker = os.getpid()  # which process answered, when several share the port
        self._lines: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # loop a flush waits on

    def request(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        outcome: str,
        duration_ms: float,
        rows: int | None,
        sqlstate: str | None,
    ) -> None:
        line = (
            f'{{"event": "request", "request_id": "{request_id}", "method": {_text(method)},'
            f' "path": {_text(path)}, "status": {status}, "outcome": "{outcome}",'
            f' "duration_ms": {duration_ms!r}, "rows": {"null" if rows is None else rows},'
            f' "sqlstate": {"null" if sqlstate is None else _text(sqlstate)},'
            f' "worker": {self.worker}}}\n'
        )
        self._lines.append(line)
        loop = asyncio.get_running_loop()
        if self._flush_on is not loop:  # none pending (or on a loop that has ended)
            self._flush_on = loop
            loop.call_soon(self.flush)

    def session(self, user: str, database: str, outcome: str, duration_ms: float) -> None:
        """One line per WebSocket session, when it ends."""
        self._lines.append(
            f'{{"event": "session", "user": {_text(user)}, "database": {_text(database)},'
            f' "outcome": {_text(outcome)}, "duration_ms": {duration_ms!r},'
            f' "worker": {self.worker}}}\n'
        )
        loop = asyncio.get_running_loop()
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_on = None
        if self._lines:
            lines, self._lines = self._lines, []
            (self.stream or sys.stderr).write("".join(lines))
