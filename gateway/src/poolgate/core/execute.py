"""Running a parsed request on a pooled connection and encoding its JSON answer.

Rows arrive from the driver as they are on the wire, each cell already its Postgres
text form, and are JSON-encoded one chunk at a time as Postgres produces them, so the
response limit stops a runaway result before it is held in memory (and the statement is
cancelled on the server).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poolgate.core import wire
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
from poolgate.core.values import cell_converter

ROWS_PER_CHUNK = 1000

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

# What the driver raises for a statement, and nothing else (a refused chunk raises the
# gateway's own error, a deadline TimeoutError). UnicodeError: a parameter that is not
# text; or text from the server that is not UTF-8, which the server never sends when
# client_encoding is UTF8 (it refuses with 22021 itself, SQL_ASCII databases included).
DRIVER_ERRORS = (wire.ServerError, wire.WireError, OSError, UnicodeError)


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


async def run_request(
    connection: wire.WireConnection,
    request: SqlRequest,
    max_response_bytes: int,
    read_only: bool = False,
) -> Outcome:
    """Run a single query, or a batch in one transaction (committed only if all succeed).

    `read_only` runs a single query inside a READ ONLY transaction too (what the cache
    requires of anything it stores).

    Raises `QueryFailed` for a Postgres error, `ResponseTooLarge` past the limit and
    `Unavailable` or `OutcomeUnknown` if the connection is lost. After any exception the
    connection's state is unknown: the caller discards it.
    """
    budget = _Budget(max_response_bytes)
    try:
        if any(reads_session_sequences(statement.query) for statement in request.statements):
            await run_command(connection, RESET_BEFORE)  # currval/lastval: its own only
        if request.batch is None and not read_only:
            return await _run_statements(connection, request, budget)
        begin = "BEGIN READ ONLY" if request.batch is None else request.batch.begin_statement()
        await run_command(connection, begin)
        outcome = await _run_statements(connection, request, budget)
        await run_command(connection, "COMMIT")
        return outcome
    except DRIVER_ERRORS as exc:
        raise translate_error(exc) from None


async def run_in_transaction(
    connection: wire.WireConnection, request: SqlRequest, max_response_bytes: int
) -> Outcome:
    """A query, or a batch's statements in order, inside the connection's open
    transaction (no BEGIN or COMMIT of their own): answered as outside one. (Sequence
    state was reset before the BEGIN: currval here sees this transaction's nextval.)"""
    try:
        return await _run_statements(connection, request, _Budget(max_response_bytes))
    except DRIVER_ERRORS as exc:
        raise translate_error(exc) from None


async def _run_statements(
    connection: wire.WireConnection, request: SqlRequest, budget: _Budget
) -> Outcome:
    """A single query's answer, or a batch's `{"results": [...]}`, statement by statement
    (the caller runs whatever transaction commands surround them)."""
    if request.batch is None:
        body, rows = await _run_statement(connection, request.statements[0], request, budget)
        return Outcome(body.encode(), rows)
    bodies: list[str] = []
    total_rows = 0
    for statement in request.statements:
        body, rows = await _run_statement(connection, statement, request, budget)
        bodies.append(body)
        total_rows += rows
    return Outcome(('{"results":[' + ",".join(bodies) + "]}").encode(), total_rows)


async def run_command(connection: wire.WireConnection, command: str) -> str:
    """BEGIN ..., COMMIT, ROLLBACK or another command of the gateway's own; the command
    tag Postgres answered (a COMMIT of an aborted transaction answers ROLLBACK). Raises
    the driver's errors untranslated."""
    return (await connection.run(command, (), ROWS_PER_CHUNK, _no_rows)).tag


def _no_rows(fields: list[wire.Field], rows: list[wire.Row]) -> None:
    raise wire.WireError("a transaction command returned rows")


# The server went away under the statement: worth a retry, not the client's fault.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
# Class 08 is about the connection, except 08P01, which Postgres also raises for a
# request it refuses (e.g. "bind message supplies 0 parameters, but ... requires 1").
_REQUEST_PROTOCOL_VIOLATION = "08P01"
_NOT_TEXT = "22021"  # character_not_in_repertoire


def translate_error(error: Exception) -> GatewayError:
    """The driver's exceptions, mapped once: server errors keep their diagnostics."""
    if isinstance(error, UnicodeEncodeError):  # nothing was sent (the parse refuses these)
        return QueryFailed.refused_value(
            'invalid byte sequence for encoding "UTF8": a lone surrogate', _NOT_TEXT
        )
    if isinstance(error, wire.CopyRefused):
        return BadRequest(str(error))
    if not isinstance(error, wire.ServerError):  # the connection broke, or the server
        return _lost_mid_request()  # said something this driver does not expect
    sqlstate = error.sqlstate or ""
    if sqlstate in _SERVER_GONE and error.after_complete:
        # ended after the statement completed: its commit (at Sync) may have happened
        return _lost_mid_request()
    if sqlstate in _SERVER_GONE:
        # the server ended the statement with an error before it completed: no commit
        return Unavailable("the database connection was lost", retry_after=1)
    if sqlstate.startswith("08") and sqlstate != _REQUEST_PROTOCOL_VIOLATION:
        return _lost_mid_request()
    return QueryFailed(error.fields)


def _lost_mid_request() -> OutcomeUnknown:
    return OutcomeUnknown(
        "the database connection broke while the request ran: whether it took effect is unknown"
    )


def _refuse_nul(statement: Statement) -> None:
    """Postgres text cannot hold NUL: refused before sending, as libpq-based drivers do
    (a NUL inside the query would end its string in the Parse message)."""
    if "\x00" in statement.query or any(
        param is not None and "\x00" in param for param in statement.params
    ):
        raise QueryFailed.refused_value(
            "PostgreSQL text fields cannot contain NUL (0x00) bytes", _NOT_TEXT
        )


async def _run_statement(
    connection: wire.WireConnection, statement: Statement, request: SqlRequest, budget: _Budget
) -> tuple[str, int]:
    if not statement.query.strip():
        raise BadRequest("query is empty")
    _refuse_nul(statement)
    encoded_chunks: list[str] = []
    row_count = 0
    convert: Callable[[wire.Row], Any] | None = None

    def take_chunk(fields: list[wire.Field], rows: list[wire.Row]) -> None:
        nonlocal convert, row_count
        if convert is None:
            convert = _row_converter(fields, request.raw_text, statement.array_mode)
        chunk = _dumps(rows if convert is _AS_IS else [convert(row) for row in rows])
        budget.spend(chunk)
        encoded_chunks.append(chunk[1:-1])
        row_count += len(rows)

    result = await connection.run(statement.query, statement.params, ROWS_PER_CHUNK, take_chunk)
    head = _encode_head(result, statement.array_mode)
    budget.spend(head)
    return head + ",".join(encoded_chunks) + "]}", row_count


def _encode_head(result: wire.Result, array_mode: bool) -> str:
    """Everything of a result but its rows, ending where the rows array opens."""
    words = result.tag.split(" ")
    count = int(words[-1]) if len(words) > 1 and is_ascii_number(words[-1]) else None
    fields = [
        {
            "name": field.name,
            "dataTypeID": field.type_oid,
            "tableID": field.table_oid,
            "columnID": field.column,
            "dataTypeSize": field.size,
            "dataTypeModifier": field.modifier,
            "format": "text",
        }
        for field in result.fields
    ]
    head = _dumps(
        {"command": words[0], "rowCount": count, "rowAsArray": array_mode, "fields": fields}
    )
    return head[:-1] + ',"rows":['


def _AS_IS(row: wire.Row) -> Any:
    return row


def _row_converter(
    fields: list[wire.Field], raw_text: bool, array_mode: bool
) -> Callable[[wire.Row], Any]:
    """The per-row function turning text cells into the row as it is sent."""
    names = [field.name for field in fields]
    converters = [None if raw_text else cell_converter(field.type_oid) for field in fields]
    if not any(converters):
        return _AS_IS if array_mode else lambda row: dict(zip(names, row, strict=True))

    def converted(row: wire.Row) -> list[Any]:
        return [
            value if value is None or conv is None else conv(value)
            for conv, value in zip(converters, row, strict=True)
        ]

    if array_mode:
        return converted
    return lambda row: dict(zip(names, converted(row), strict=True))
