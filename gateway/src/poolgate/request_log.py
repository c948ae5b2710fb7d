"""The per-request log: one JSON line per request, written straight to a stream.

It bypasses `logging` (a record, a formatter and a handler lock per line cost more than
the line itself) but keeps its guarantee: the line is written before the answer is, so
a client that got an answer finds its line in the log.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

_encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


class RequestLog:
    """`stream`: where lines go; by default whatever `sys.stderr` is at the time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        (self.stream or sys.stderr).write(_encode(record) + "\n")
