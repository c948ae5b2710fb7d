"""`/sql` requests run over the lean wire driver (`core.wire`): the prototype of issue 23.

The same answers as `execute.run_request` (the same JSON, byte for byte, for what it
covers), from RowDescription and DataRow as they arrive: cells are already text, so a
chunk of rows is one `json` call over lists of strings. Its pool is deliberately small:
per (user, database), at most --pool-size connections, FIFO waiters, LIFO reuse, a
connection that saw an error or a cancellation closed, a password reused only if it is
the one that opened the connection. Selected with `POOLGATE_DRIVER=wire`, for
measurement only: the default driver stays psycopg (see the gateway README).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from poolgate.config import Settings
from poolgate.core import wire
from poolgate.core.errors import (
    _DIAGNOSTIC_FIELDS,
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    OutcomeUnknown,
    QueryFailed,
    Unavailable,
)
from poolgate.core.execute import ROWS_PER_CHUNK, Outcome, _Budget, _dumps
from poolgate.core.pool import _CREDENTIAL_REFUSALS
from poolgate.core.requests import Credentials, SqlRequest, Statement, is_ascii_number
from poolgate.core.session_state import RESET_BEFORE, may_change_session, reads_session_sequences
from poolgate.core.values import cell_converter

log = logging.getLogger("poolgate.wire")

DRIVER = os.environ.get("POOLGATE_DRIVER", "psycopg")
_ATTRIBUTE_CODE = {attribute: code for code, attribute in wire.ERROR_FIELDS.items()}


class WireQueryFailed(QueryFailed):
    """A Postgres error as the wire driver read it: every field the server sent."""

    def __init__(self, error: wire.ServerError) -> None:
        GatewayError.__init__(self, error.fields.get("M", "server error"))
        self.fields = {
            name: error.fields.get(_ATTRIBUTE_CODE[attribute])
            for name, attribute in _DIAGNOSTIC_FIELDS
        }


_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


def _translate(error: wire.ServerError) -> GatewayError:
    sqlstate = error.sqlstate or ""
    if sqlstate in _SERVER_GONE:
        return Unavailable("the database connection was lost", retry_after=1)
    if sqlstate.startswith("08") and sqlstate != "08P01":
        return OutcomeUnknown("the database connection broke while the request ran")
    return WireQueryFailed(error)


class _Pool:
    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self._settings = settings
        self._credentials = credentials
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[tuple[wire.WireConnection, bytes]] = []
        # the digest of the password each open connection logged in with
        self._digests: dict[wire.WireConnection, bytes] = {}

    async def acquire(self, password: str | None, deadline: float) -> wire.WireConnection:
        try:
            async with asyncio.timeout_at(
                min(deadline, asyncio.get_running_loop().time() + self._settings.acquire_timeout)
            ):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable("no pooled connection became free in time") from None
        digest = hashlib.sha256((password or "").encode()).digest()
        try:
            while self._idle:
                connection, known = self._idle.pop()
                if known == digest and connection.idle and not connection.broken:
                    return connection
                self._digests.pop(connection, None)
                connection.close()
            return await self._connect(password, digest)
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self, password: str | None, digest: bytes) -> wire.WireConnection:
        settings = self._settings
        options = {
            "application_name": "poolgate",
            "options": f"-c statement_timeout={round(settings.statement_timeout * 1000)}",
            "client_encoding": "UTF8",
        }
        try:
            async with asyncio.timeout(settings.connect_timeout):
                connection = await wire.connect(
                    wire.Target.of(settings.upstream),
                    self._credentials.user,
                    self._credentials.database,
                    password,
                    options,
                )
        except wire.ServerError as exc:
            if any(refusal in str(exc) for refusal in _CREDENTIAL_REFUSALS):
                raise AuthenticationFailed() from None
            raise Unavailable("the database is not reachable", retry_after=2) from None
        except (TimeoutError, OSError, wire.WireError):
            raise Unavailable("the database is not reachable", retry_after=2) from None
        self._digests[connection] = digest
        return connection

    def release(self, connection: wire.WireConnection, reusable: bool) -> None:
        if reusable and connection.idle and not connection.broken:
            self._idle.append((connection, self._digests[connection]))
        else:
            self._digests.pop(connection, None)
            connection.close()
        self._slots.release()


class WirePools:
    """The prototype driver's pools, one per (user, database)."""

    def __init__(self, settings: Settings, prepare: bool = False) -> None:
        self._settings = settings
        self._prepare = prepare  # named statements, parsed once per connection
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, request: SqlRequest, read_only: bool, deadline: float) -> Outcome:
        credentials = request.credentials
        key = (credentials.user, credentials.database)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self._settings, credentials)
        connection = await pool.acquire(credentials.password, deadline)
        reusable = False
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await _run_request(
                    connection, request, self._settings.max_response_bytes, read_only, self._prepare
                )
                if any(may_change_session(s.query) for s in request.statements):
                    if self._settings.reset_query:
                        await connection.run(self._settings.reset_query, (), 1, _no_rows)
                    connection.forget_prepared()  # DISCARD or DEALLOCATE may have run
            reusable = True
            return outcome
        except TimeoutError:
            raise OutcomeUnknown("the database did not answer in time") from None
        except wire.ServerError as exc:
            raise _translate(exc) from None
        except wire.WireError as exc:
            if "COPY" in str(exc):
                raise BadRequest(str(exc)) from None
            raise OutcomeUnknown(f"the database connection broke: {exc}") from None
        finally:
            if not reusable and not connection.broken and not connection.idle:
                task = asyncio.get_running_loop().create_task(_cancel(connection))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            pool.release(connection, reusable)

    async def close(self) -> None:
        for pool in self._pools.values():
            for connection, _ in pool._idle:
                connection.close()


async def _cancel(connection: wire.WireConnection) -> None:
    try:
        async with asyncio.timeout(1.0):
            await connection.cancel()
    except (OSError, TimeoutError) as exc:
        log.info("query cancellation not confirmed: %s", type(exc).__name__)


def _no_rows(fields: list[wire.Field], rows: list[wire.Row]) -> None:
    raise wire.WireError("a transaction command returned rows")


async def _run_request(
    connection: wire.WireConnection,
    request: SqlRequest,
    limit: int,
    read_only: bool,
    prepare: bool = False,
) -> Outcome:
    budget = _Budget(limit)
    if any(reads_session_sequences(statement.query) for statement in request.statements):
        await connection.run(RESET_BEFORE, (), 1, _no_rows)
    if request.batch is None and not read_only:
        return await _run_statements(connection, request, budget, prepare)
    begin = "BEGIN READ ONLY" if request.batch is None else request.batch.begin_statement()
    await connection.run(begin, (), 1, _no_rows)
    try:
        outcome = await _run_statements(connection, request, budget, prepare)
    except wire.ServerError:
        await connection.run("ROLLBACK", (), 1, _no_rows)
        raise
    await connection.run("COMMIT", (), 1, _no_rows)
    return outcome


async def _run_statements(
    connection: wire.WireConnection, request: SqlRequest, budget: _Budget, prepare: bool
) -> Outcome:
    if request.batch is None:
        body, rows = await _run_statement(
            connection, request.statements[0], request, budget, prepare
        )
        return Outcome(body.encode(), rows)
    bodies: list[str] = []
    total = 0
    for statement in request.statements:
        body, rows = await _run_statement(connection, statement, request, budget, prepare)
        bodies.append(body)
        total += rows
    return Outcome(('{"results":[' + ",".join(bodies) + "]}").encode(), total)


async def _run_statement(
    connection: wire.WireConnection,
    statement: Statement,
    request: SqlRequest,
    budget: _Budget,
    prepare: bool,
) -> tuple[str, int]:
    if not statement.query.strip():
        raise BadRequest("query is empty")
    encoded: list[str] = []
    row_count = 0
    convert: Callable[[wire.Row], Any] | None = None

    def take_chunk(fields: list[wire.Field], rows: list[wire.Row]) -> None:
        nonlocal convert, row_count
        if convert is None:
            convert = _row_converter(fields, request.raw_text, statement.array_mode)
        chunk = _dumps(rows if convert is _AS_IS else [convert(row) for row in rows])
        budget.spend(chunk)
        encoded.append(chunk[1:-1])
        row_count += len(rows)

    result = await connection.run(
        statement.query, statement.params, ROWS_PER_CHUNK, take_chunk, prepare
    )
    head = _encode_head(result, statement.array_mode)
    budget.spend(head)
    return head + ",".join(encoded) + "]}", row_count


def _encode_head(result: wire.Result, array_mode: bool) -> str:
    words = result.tag.split(" ")
    count = int(words[-1]) if len(words) > 1 and is_ascii_number(words[-1]) else None
    fields = [
        {
            "name": f.name,
            "dataTypeID": f.type_oid,
            "tableID": f.table_oid,
            "columnID": f.column,
            "dataTypeSize": f.size,
            "dataTypeModifier": f.modifier,
            "format": "text",
        }
        for f in result.fields
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
    names = [f.name for f in fields]
    converters = [None if raw_text else cell_converter(f.type_oid) for f in fields]
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
