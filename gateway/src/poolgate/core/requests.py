"""What a face asks of the core: who connects (`Credentials`), the statements to run and
how (`Statement`, `BatchOptions`, `SqlRequest`). Each face builds these from its own
protocol (Neon's `/sql` headers and JSON in `faces/neon_http/protocol.py`, a WebSocket
start-up packet in `faces/neon_ws`), and the core never sees the protocol itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# JSON can spell a lone UTF-16 surrogate (not text in any encoding) only as an escape; a
# body without one needs no further look (raw bytes that are not UTF-8 fail to parse)
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_PARAMS = 65535  # the Postgres protocol's limit: a Bind message counts them in 16 bits


def is_ascii_number(text: str) -> bool:
    """Whether `text` is a whole number in ASCII digits only: `str.isdigit()` also takes
    superscripts, Arabic-Indic and fullwidth digits (which `int()` refuses, or reads as
    a number no client meant). Every number read from a header or a path passes this."""
    return text.isascii() and text.isdigit()


class Isolation(Enum):
    """Batch isolation levels, by the names the `Neon-Batch-Isolation-Level` header uses."""

    Serializable = "SERIALIZABLE"
    ReadUncommitted = "READ UNCOMMITTED"
    ReadCommitted = "READ COMMITTED"
    RepeatableRead = "REPEATABLE READ"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who to authenticate as upstream; the host of the connection string is never kept."""

    user: str
    password: str | None
    database: str

    def __repr__(self) -> str:  # keeps passwords out of logs and tracebacks
        return f"Credentials(user={self.user!r}, database={self.database!r})"


@dataclass(frozen=True, slots=True)
class Statement:
    query: str
    params: tuple[str | None, ...]
    array_mode: bool

    def __repr__(self) -> str:  # parameter values never reach logs
        return f"Statement(query={self.query!r}, params=<{len(self.params)}>)"


@dataclass(frozen=True, slots=True)
class BatchOptions:
    isolation: Isolation | None = None
    read_only: bool = False
    deferrable: bool = False

    def begin_statement(self) -> str:
        parts = ["BEGIN"]
        if self.isolation is not None:
            parts.append(f"ISOLATION LEVEL {self.isolation.value}")
        parts.append("READ ONLY" if self.read_only else "READ WRITE")
        if self.deferrable:
            parts.append("DEFERRABLE")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class SqlRequest:
    credentials: Credentials
    statements: tuple[Statement, ...]
    batch: BatchOptions | None  # None for a single query
    raw_text: bool
