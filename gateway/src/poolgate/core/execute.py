"""Running a parsed request on a pooled connection and encoding its JSON answer.

Rows are converted and JSON-encoded one chunk at a time, as Postgres produces them, so
the response limit stops a runaway result before it is held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import adapt, pq
from psycopg.adapt import AdaptersMap
from psycopg.types.none import NoneDumper
from psycopg.types.string import StrDumperUnknown, TextLoader

from poolgate.core.errors import (
    BadRequest,
    GatewayError,
    OutcomeUnknown,
    QueryFailed,
    ResponseTooLarge,
    Unavailable,
)
from poolgate.core.requests import SqlRequest, Statement, is_ascii_number
from poolgate.core.session_state import RESET_BEFORE, reads_session_sequences
from poolgate.core.streaming import ChunkedCursor
from poolgate.core.values import cell_converter

ROWS_PER_CHUNK = 1000

# Every cell is loaded as its Postgres text form; every parameter is sent as untyped text.
_TEXT_ONLY = AdaptersMap()
_TEXT_ONLY.register_loader(0, TextLoader)
_TEXT_ONLY.register_dumper(str, StrDumperUnknown)
_TEXT_ONLY.register_dumper(type(None), NoneDumper)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(slots=True)
class Outcome:
    """The encoded answer and how many rows it holds (for the request log)."""

    body: bytes
    row_count: int


class _Budget:
    """Bytes of response left; shared by every statement of a batch."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, text: str) -> None:
        self.left -= len(text)
        if self.left < 0:
            raise ResponseTooLarge(self.limit)


class _TextContext:
    """The adaptation context psycopg's Transformer reads: text in, text out."""

    adapters = _TEXT_ONLY

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection


async def run_request(
    connection: psycopg.AsyncConnection[Any],
    request: SqlRequest,
    max_response_bytes: int,
    read_only: bool = False,
) -> Outcome:
    """Run a single query, or a batch in one transaction (committed only if all succeed).

    `read_only` runs a single query inside a READ ONLY transaction too (what the cache
    requires of anything it stores).

    Raises `QueryFailed` for a Postgres error, `ResponseTooLarge` past the limit and
    `Unavailable` if the connection is lost. After any exception the connection's state
    is unknown: the caller discards it.
    """
    budget = _Budget(max_response_bytes)
    cursor = _cursor(connection)
    try:
        if any(reads_session_sequences(statement.query) for statement in request.statements):
            await _command(cursor, RESET_BEFORE)  # currval/lastval: this request's own only
        if request.batch is None and not read_only:
            return await _run_statements(cursor, request, budget)
        begin = "BEGIN READ ONLY" if request.batch is None else request.batch.begin_statement()
        await _command(cursor, begin)
        outcome = await _run_statements(cursor, request, budget)
        await _command(cursor, "COMMIT")
        return outcome
    except psycopg.Error as exc:
        raise translate_error(exc) from None


async def run_in_transaction(
    connection: psycopg.AsyncConnection[Any], request: SqlRequest, max_response_bytes: int
) -> Outcome:
    """A query, or a batch's statements in order, inside the connection's open
    transaction (no BEGIN or COMMIT of their own): answered as outside one. (Sequence
    state was reset before the BEGIN: currval here sees this transaction's nextval.)"""
    try:
        return await _run_statements(_cursor(connection), request, _Budget(max_response_bytes))
    except psycopg.Error as exc:
        raise translate_error(exc) from None


async def _run_statements(cursor: ChunkedCursor, request: SqlRequest, budget: _Budget) -> Outcome:
    """A single query's answer, or a batch's `{"results": [...]}`, statement by statement
    (the caller runs whatever transaction commands surround them)."""
    if request.batch is None:
        body, rows = await _run_statement(cursor, request.statements[0], request, budget)
        return Outcome(body.encode(), rows)
    bodies: list[str] = []
    total_rows = 0
    for statement in request.statements:
        body, rows = await _run_statement(cursor, statement, request, budget)
        bodies.append(body)
        total_rows += rows
    return Outcome(('{"results":[' + ",".join(bodies) + "]}").encode(), total_rows)


async def end_transaction(connection: psycopg.AsyncConnection[Any], command: str) -> str:
    """BEGIN ..., COMMIT or ROLLBACK; the command tag Postgres answered (a COMMIT of an
    aborted transaction answers ROLLBACK). Raises psycopg's errors untranslated."""
    _, tag = await _cursor(connection).run(command, (), ROWS_PER_CHUNK, _no_rows)
    return tag.decode()


def _cursor(connection: psycopg.AsyncConnection[Any]) -> ChunkedCursor:
    cursor = ChunkedCursor(connection)
    cursor._adapters = _TEXT_ONLY  # parameters dumped as untyped text
    return cursor


async def _command(cursor: ChunkedCursor, text: str) -> None:
    """A transaction command, through the same cursor as the statements, so that a
    cancelled request ends at once even if the server no longer answers (see streaming)."""
    await cursor.run(text, (), ROWS_PER_CHUNK, _no_rows)


def _no_rows(result: pq.abc.PGresult) -> None:
    raise psycopg.InterfaceError("a transaction command returned rows")


# The server went away under the statement: worth a retry, not the client's fault.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
# Class 08 is about the connection, except 08P01, which Postgres also raises for a
# request it refuses (e.g. "bind message supplies 0 parameters, but ... requires 1").
_REQUEST_PROTOCOL_VIOLATION = "08P01"


def translate_error(error: psycopg.Error) -> GatewayError:
    """psycopg's exceptions, mapped once: server errors keep their diagnostics."""
    sqlstate = error.sqlstate
    connection_lost = sqlstate is not None and (
        sqlstate in _SERVER_GONE
        or (sqlstate.startswith("08") and sqlstate != _REQUEST_PROTOCOL_VIOLATION)
    )
    if sqlstate in _SERVER_GONE:
        # the server ended the statement with an error: it did not commit
        return Unavailable("the database connection was lost", retry_after=1)
    if connection_lost:
        return _lost_mid_request()
    if sqlstate:
        return QueryFailed(error)
    if isinstance(error, psycopg.DataError):
        # e.g. a NUL byte in a text value, caught by libpq before sending: Postgres itself
        # would refuse it as 22021 (character_not_in_repertoire)
        return QueryFailed(error, sqlstate="22021")
    if isinstance(error, psycopg.OperationalError):
        return _lost_mid_request()
    return BadRequest(str(error))


def _lost_mid_request() -> OutcomeUnknown:
    return OutcomeUnknown(
        "the database connection broke while the request ran: whether it took effect is unknown"
    )


async def _run_statement(
    cursor: ChunkedCursor, statement: Statement, request: SqlRequest, budget: _Budget
) -> tuple[str, int]:
    if not statement.query.strip():
        raise BadRequest("query is empty")
    transformer = adapt.Transformer(_TextContext(cursor.connection))
    encoded_chunks: list[str] = []
    row_count = 0
    convert: Callable[[tuple[Any, ...]], Any] | None = None

    def take_chunk(result: pq.abc.PGresult) -> None:
        nonlocal convert, row_count
        rows_in_chunk = result.ntuples
        transformer.set_pgresult(result, set_loaders=convert is None)
        if convert is None:
            convert = _row_converter(result, request.raw_text, statement.array_mode)
        rows = transformer.load_rows(0, rows_in_chunk, tuple)
        chunk = _dumps(rows if convert is _AS_IS else [convert(row) for row in rows])
        budget.spend(chunk)
        encoded_chunks.append(chunk[1:-1])
        row_count += rows_in_chunk

    final, tag = await cursor.run(statement.query, statement.params, ROWS_PER_CHUNK, take_chunk)
    head = _encode_head(final, tag.decode(), statement.array_mode)
    budget.spend(head)
    return head + ",".join(encoded_chunks) + "]}", row_count


def _encode_head(final: pq.abc.PGresult, tag: str, array_mode: bool) -> str:
    """Everything of a result but its rows, ending where the rows array opens."""
    words = tag.split(" ")
    count = int(words[-1]) if len(words) > 1 and is_ascii_number(words[-1]) else None
    fields = [
        {
            "name": (final.fname(column) or b"").decode(),
            "dataTypeID": final.ftype(column),
            "tableID": final.ftable(column),
            "columnID": final.ftablecol(column),
            "dataTypeSize": final.fsize(column),
            "dataTypeModifier": final.fmod(column),
            "format": "text",
        }
        for column in range(final.nfields)
    ]
    head = _dumps(
        {"command": words[0], "rowCount": count, "rowAsArray": array_mode, "fields": fields}
    )
    return head[:-1] + ',"rows":['


def _AS_IS(row: tuple[Any, ...]) -> Any:
    return row


def _row_converter(
    result: pq.abc.PGresult, raw_text: bool, array_mode: bool
) -> Callable[[tuple[Any, ...]], Any]:
    """The per-row function turning text cells into the row as it is sent."""
    names = [(result.fname(column) or b"").decode() for column in range(result.nfields)]
    converters = [
        None if raw_text else cell_converter(result.ftype(column))
        for column in range(result.nfields)
    ]
    if not any(converters):
        return _AS_IS if array_mode else lambda row: dict(zip(names, row, strict=True))

    def converted(row: tuple[Any, ...]) -> list[Any]:
        return [
            value if value is None or conv is None else conv(value)
            for conv, value in zip(converters, row, strict=True)
        ]

    if array_mode:
        return converted
    return lambda row: dict(zip(names, converted(row), strict=True))
