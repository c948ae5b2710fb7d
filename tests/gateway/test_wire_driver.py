"""The gateway's wire-protocol driver (`poolgate.core.wire`): every message it handles,
against a real Postgres, and its parser over a byte stream split at every boundary."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from poolgate.core import wire

from devstack.postgres import EmbeddedPostgres
from tests.support.services import APP_DATABASE, APP_PASSWORD, APP_USER


async def _connect(postgres: EmbeddedPostgres, password: str = APP_PASSWORD) -> wire.WireConnection:
    target = wire.Target.of({"host": postgres.socket_dir})
    return await wire.connect(
        target, APP_USER, APP_DATABASE, password, {"application_name": "wire-test"}
    )


@pytest.fixture
async def connection(postgres: EmbeddedPostgres) -> AsyncIterator[wire.WireConnection]:
    """A logged-in connection of the app role, closed after the test."""
    opened = await _connect(postgres)
    yield opened
    opened.close()


async def _rows(
    connection: wire.WireConnection,
    query: str,
    params: list[str | None] | None = None,
) -> tuple[wire.Result, list[wire.Row]]:
    rows: list[wire.Row] = []
    result = await connection.run(query, params or [], 1000, lambda _, chunk: rows.extend(chunk))
    return result, rows


async def test_a_scram_login_then_a_query_gives_its_text_cells_and_command_tag(
    connection: wire.WireConnection,
) -> None:
    result, rows = await _rows(
        connection, "SELECT $1::int + 1 AS n, NULL::text AS nothing, $2 AS word", ["41", "é"]
    )
    assert rows == [["42", None, "é"]]
    assert result.tag == "SELECT 1"
    assert [f.name for f in result.fields] == ["n", "nothing", "word"]
    assert connection.idle
    assert connection.authentication == "scram-sha-256"
    assert connection.parameters["server_encoding"] == "UTF8"


async def test_fields_carry_table_oid_column_number_and_type_modifier(
    connection: wire.WireConnection,
) -> None:
    await _rows(connection, "CREATE TEMP TABLE wire_fields (a int, b varchar(20))")
    result, _ = await _rows(connection, "SELECT b, a FROM wire_fields")
    _, oid_rows = await _rows(connection, "SELECT 'wire_fields'::regclass::oid")
    b, a = result.fields
    assert (b.table_oid, b.column, b.type_oid, b.modifier) == (
        int(oid_rows[0][0] or 0),
        2,
        1043,
        24,
    )
    assert (a.column, a.type_oid, a.size) == (1, 23, 4)


async def test_an_error_response_keeps_every_field_and_the_connection_turns_idle(
    connection: wire.WireConnection,
) -> None:
    await _rows(connection, "CREATE TEMP TABLE wire_unique (id int PRIMARY KEY)")
    await _rows(connection, "INSERT INTO wire_unique VALUES (1)")
    with pytest.raises(wire.ServerError) as raised:
        await _rows(connection, "INSERT INTO wire_unique VALUES (1)")
    fields = raised.value.fields
    assert raised.value.sqlstate == "23505"
    assert fields["t"] == "wire_unique" and fields["n"] == "wire_unique_pkey"
    assert "Key (id)=(1)" in fields["D"] and fields["S"] == "ERROR" and "R" in fields
    assert connection.idle
    _, rows = await _rows(connection, "SELECT 1")
    assert rows == [["1"]]


async def test_notices_are_collected_with_the_result(connection: wire.WireConnection) -> None:
    result, _ = await _rows(connection, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
    assert result.tag == "DO"
    assert [notice["M"] for notice in result.notices] == ["hello 42"]


async def test_rows_reach_the_callback_in_chunks_as_they_arrive(
    connection: wire.WireConnection,
) -> None:
    sizes: list[int] = []
    result = await connection.run(
        "SELECT generate_series(1, 2500)", [], 1000, lambda _, chunk: sizes.append(len(chunk))
    )
    assert sizes == [1000, 1000, 500] and result.tag == "SELECT 2500"


async def test_a_wrong_password_is_refused_by_the_server(postgres: EmbeddedPostgres) -> None:
    with pytest.raises(wire.ServerError) as raised:
        await _connect(postgres, password="not-it")
    assert raised.value.sqlstate == "28P01"


async def test_a_cancel_request_ends_the_running_statement(connection: wire.WireConnection) -> None:
    running = asyncio.ensure_future(_rows(connection, "SELECT pg_sleep(30)"))
    await asyncio.sleep(0.3)
    await connection.cancel()
    with pytest.raises(wire.ServerError) as raised:
        await running
    assert raised.value.sqlstate == "57014"


async def test_copy_is_refused_and_the_connection_is_not_reused(postgres: EmbeddedPostgres) -> None:
    connection = await _connect(postgres)
    with pytest.raises(wire.WireError, match="COPY"):
        await _rows(connection, "COPY (SELECT 1) TO STDOUT")
    assert connection.broken


async def test_an_exception_from_the_chunk_callback_stops_the_statement(
    connection: wire.WireConnection,
) -> None:

    def refuse(fields: list[wire.Field], rows: list[wire.Row]) -> None:
        raise ValueError("too large")

    with pytest.raises(ValueError, match="too large"):
        await connection.run("SELECT generate_series(1, 2500)", [], 1000, refuse)


async def _active_statements(postgres: EmbeddedPostgres, like: str) -> int:
    def count() -> int:
        with postgres.admin() as admin:
            found = admin.execute(
                "SELECT count(*)::int FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE %s",
                (like,),
            ).fetchone()
        return int(str(found[0])) if found else 0

    return await asyncio.to_thread(count)


async def _until_checked(check: Callable[[], Awaitable[bool]]) -> None:
    """Bounded for events that take well under a second; past it, the test fails."""
    async with asyncio.timeout(20):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _until_no_active(postgres: EmbeddedPostgres, like: str) -> None:
    async def none_active() -> bool:  # else a statement that would run 1,000 x 30 s
        return not await _active_statements(postgres, like)

    await _until_checked(none_active)


async def _until_active(postgres: EmbeddedPostgres, like: str) -> None:
    async def active() -> bool:
        return bool(await _active_statements(postgres, like))

    await _until_checked(active)


async def test_a_refused_chunk_ends_the_run_at_once_and_the_statement_is_cancelled(
    postgres: EmbeddedPostgres,
) -> None:
    """The response limit's case: the rest of the result is neither awaited nor read."""
    connection = await _connect(postgres)
    query = (
        "SELECT CASE WHEN g > 200 THEN pg_sleep(30) END, repeat('x', 200) AS refused_chunk"
        " FROM generate_series(1, 1200) g"
    )

    def refuse(fields: list[wire.Field], rows: list[wire.Row]) -> None:
        raise ValueError("too large")

    try:
        async with asyncio.timeout(60):  # else it waits out 1,000 sleeps of 30 s
            with pytest.raises(ValueError, match="too large"):
                await connection.run(query, [], 10, refuse)
        assert not connection.idle  # the caller must discard it
        await _until_no_active(postgres, "%refused_chunk%")
    finally:
        connection.close()


async def test_a_run_cancelled_by_its_caller_cancels_the_statement_on_the_server(
    connection: wire.WireConnection,
    postgres: EmbeddedPostgres,
) -> None:
    running = asyncio.ensure_future(_rows(connection, "SELECT pg_sleep(30) AS abandoned"))
    await _until_active(postgres, "%abandoned%")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not connection.idle
    await _until_no_active(postgres, "%abandoned%")


async def test_a_connection_terminated_while_idle_is_known_broken_without_a_query(
    connection: wire.WireConnection,
    postgres: EmbeddedPostgres,
) -> None:
    with postgres.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.process_id,))

    async def broken() -> bool:
        return connection.broken

    await _until_checked(broken)
    assert not connection.idle


async def test_a_statement_ended_by_a_fatal_error_reports_the_servers_reason(
    connection: wire.WireConnection,
    postgres: EmbeddedPostgres,
) -> None:
    running = asyncio.ensure_future(_rows(connection, "SELECT pg_sleep(30) AS terminated"))
    await _until_active(postgres, "%terminated%")
    with postgres.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.process_id,))
    with pytest.raises(wire.ServerError) as raised:
        await running
    assert raised.value.sqlstate == "57P01"
    assert connection.broken


async def test_a_parameter_that_is_not_text_sends_nothing_and_leaves_the_connection_idle(
    connection: wire.WireConnection,
) -> None:
    with pytest.raises(UnicodeEncodeError):
        await _rows(connection, "SELECT $1::text", ["\ud800"])
    assert connection.idle
    _, rows = await _rows(connection, "SELECT 2")
    assert rows == [["2"]]


async def test_a_script_runs_every_statement_over_the_simple_protocol(
    connection: wire.WireConnection,
) -> None:
    await _rows(connection, "SET application_name = 'changed'")
    result = await connection.run_script("RESET ALL; SELECT 1; SELECT 2")
    assert result.tag == "SELECT 1" and connection.idle
    _, rows = await _rows(connection, "SHOW application_name")
    assert rows == [["wire-test"]]
    await connection.run_script("")  # an empty script: EmptyQueryResponse
    assert connection.idle


async def test_ping_tells_a_running_server_from_a_port_nobody_listens_on(
    postgres: EmbeddedPostgres, tmp_path: Any
) -> None:
    assert await wire.ping(wire.Target.of({"host": postgres.socket_dir})) == "ok"
    nowhere = wire.Target.of({"host": str(tmp_path), "port": "5999"})
    assert await wire.ping(nowhere) == "no_response"


# --- relay mode: the byte stream as it is ------------------------------------------


class _Relayed:
    """What a relay handed over: the server's bytes, and how the connection ended."""

    def __init__(self) -> None:
        self.stream = bytearray()
        self.lost: list[Exception | None] = []
        self.arrived = asyncio.Event()

    def data(self, data: bytes) -> None:
        self.stream += data
        self.arrived.set()

    def ended(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.arrived.set()

    def kinds(self) -> list[bytes]:
        found, position = [], 0
        while len(self.stream) - position >= 5:
            kind, length = struct.unpack_from("!ci", self.stream, position)
            if len(self.stream) - position < 1 + length:
                break
            found.append(kind)
            position += 1 + length
        return found

    async def until(self, condition: Any) -> None:
        while not condition():
            assert not self.lost, f"the connection ended: {self.lost}"
            self.arrived.clear()
            await self.arrived.wait()


def _query(sql: str) -> bytes:
    return _message(b"Q", sql.encode() + b"\x00")


async def _until(condition: Any, what: str) -> None:
    """Waits for an effect; the bound only makes a broken build fail instead of hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def _wait_event(postgres: EmbeddedPostgres, pid: int) -> object:
    with postgres.admin(APP_DATABASE) as conn:
        row = conn.execute(
            "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row[0] if row else None


async def test_a_relay_passes_the_servers_bytes_as_they_are_then_statements_run_again(
    connection: wire.WireConnection,
) -> None:
    relayed = _Relayed()
    connection.start_relay(relayed.data, relayed.ended)
    assert not connection.idle
    connection.write(_query("SELECT 41 + 1 AS n; SET application_name = 'relayed'"))
    await connection.drain()
    await relayed.until(lambda: b"Z" in relayed.kinds())
    assert relayed.kinds() == [b"T", b"D", b"C", b"C", b"S", b"Z"]
    assert b"\x00\x00\x00\x0242" in relayed.stream and relayed.stream.endswith(b"Z\0\0\0\x05I")
    # what the server reported meanwhile was not parsed: the relay's caller follows it
    assert connection.parameters["application_name"] == "wire-test"
    connection.end_relay(idle=True)
    assert connection.idle
    _, rows = await _rows(connection, "SELECT current_setting('application_name')")
    assert rows == [["relayed"]] and relayed.lost == []


async def test_a_relay_ended_with_an_answer_owed_leaves_the_connection_not_idle(
    connection: wire.WireConnection,
) -> None:
    relayed = _Relayed()
    connection.start_relay(relayed.data, relayed.ended)
    connection.write(_query("SELECT pg_sleep(0.1)"))
    connection.end_relay(idle=False)
    assert not connection.idle and not connection.broken


async def test_a_paused_relay_stops_reading_so_the_server_blocks_not_the_clients_memory(
    connection: wire.WireConnection,
    postgres: EmbeddedPostgres,
) -> None:
    relayed = _Relayed()
    connection.start_relay(relayed.data, relayed.ended)
    connection.pause_reading()
    # about 100 MB of rows, none of them read for now
    connection.write(_query("SELECT repeat('x', 1048576) FROM generate_series(1, 100)"))
    await _until(
        lambda: _wait_event(postgres, connection.process_id) == "ClientWrite",
        "Postgres blocked writing to the paused connection",
    )
    assert len(relayed.stream) < 1024 * 1024
    connection.resume_reading()
    await relayed.until(lambda: b"Z" in relayed.kinds())
    assert relayed.kinds().count(b"D") == 100
    connection.end_relay(idle=True)
    _, rows = await _rows(connection, "SELECT 1")
    assert rows == [["1"]]


async def test_a_server_that_does_not_read_makes_drain_wait_until_it_does(
    connection: wire.WireConnection,
    postgres: EmbeddedPostgres,
) -> None:
    relayed = _Relayed()
    connection.start_relay(relayed.data, relayed.ended)
    connection.pause_reading()
    connection.write(_query("SELECT repeat('x', 1048576) FROM generate_series(1, 20)"))
    await _until(
        lambda: _wait_event(postgres, connection.process_id) == "ClientWrite",
        "Postgres blocked writing, so it reads nothing more",
    )
    # one long statement in pieces: written until the transport says it is full
    body = b"SELECT 1 -- " + b"x" * (16 * 1024 * 1024) + b"\x00"
    message = b"Q" + struct.pack("!i", len(body) + 4) + body
    written, piece = 0, 64 * 1024
    while written < len(message):
        connection.write(message[written : written + piece])
        written += piece
        if not connection._can_write.is_set():
            break
    assert written < len(message), "the transport never said it was full"
    draining = asyncio.ensure_future(connection.drain())
    await asyncio.sleep(0.2)
    assert not draining.done()
    connection.resume_reading()  # the server finishes its answer, then reads ours
    await draining
    while written < len(message):
        connection.write(message[written : written + piece])
        written += piece
        await connection.drain()
    await relayed.until(lambda: relayed.kinds().count(b"Z") == 2)
    connection.end_relay(idle=True)
    _, rows = await _rows(connection, "SELECT 2")
    assert rows == [["2"]]


async def test_the_connections_end_during_a_relay_reaches_on_lost_and_is_never_idle(
    postgres: EmbeddedPostgres,
) -> None:
    connection = await _connect(postgres)
    relayed = _Relayed()
    connection.start_relay(relayed.data, relayed.ended)
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (connection.process_id,))
    await _until(lambda: bool(relayed.lost), "the relay heard of the connection's end")
    assert connection.broken and b"E" in relayed.kinds()  # 57P01, passed on as it came
    with pytest.raises(wire.WireError):
        connection.write(_query("SELECT 1"))
    with pytest.raises(wire.WireError):
        await connection.drain()
    connection.end_relay(idle=True)
    assert not connection.idle


def test_bytes_already_buffered_go_to_the_relay_first() -> None:
    async def run() -> tuple[bytes, list[Exception | None]]:
        connection = wire.WireConnection()
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection._starting = False
        notice = _message(b"N", b"SNOTICE\x00Mhi\x00\x00")
        connection.data_received(notice[:7])  # half a message: held by the parser
        relayed = _Relayed()
        connection.start_relay(relayed.data, relayed.ended)
        connection.data_received(notice[7:])
        connection.connection_lost(None)
        return bytes(relayed.stream), relayed.lost

    stream, lost = asyncio.run(run())
    assert stream == _message(b"N", b"SNOTICE\x00Mhi\x00\x00") and lost == [None]


# --- the parser alone, over the byte stream split anywhere ---------------------------


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _answer(rows: list[list[str | None]], columns: int) -> bytes:
    description = struct.pack("!h", columns) + b"".join(
        f"c{n}".encode() + b"\x00" + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
        for n in range(columns)
    )
    stream = _message(b"1", b"") + _message(b"2", b"") + _message(b"T", description)
    for row in rows:
        cells = b"".join(
            b"\xff\xff\xff\xff"
            if cell is None
            else struct.pack("!i", len(cell.encode())) + cell.encode()
            for cell in row
        )
        stream += _message(b"D", struct.pack("!h", columns) + cells)
    stream += _message(b"N", b"SNOTICE\x00Mhi\x00\x00")
    stream += _message(b"C", f"SELECT {len(rows)}".encode() + b"\x00")
    return stream + _message(b"Z", b"I")


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


cells = st.one_of(st.none(), st.text(max_size=20))


@settings(max_examples=150, deadline=None)
@given(
    columns=st.integers(1, 4),
    data=st.data(),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_the_parser_reads_the_same_answer_however_the_stream_is_split(
    columns: int, data: Any, cuts: list[int]
) -> None:
    rows = data.draw(st.lists(st.lists(cells, min_size=columns, max_size=columns), max_size=8))
    stream = _answer(rows, columns)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]

    async def run() -> tuple[wire.Result, list[wire.Row], list[int]]:
        connection = wire.WireConnection()
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection._starting = False
        got: list[wire.Row] = []
        chunks: list[int] = []

        def take(_: list[wire.Field], chunk: list[wire.Row]) -> None:
            got.extend(chunk)
            chunks.append(len(chunk))

        running = asyncio.ensure_future(connection.run("SELECT", [], 3, take))
        await asyncio.sleep(0)
        for piece in pieces:
            connection.data_received(piece)
        return await running, got, chunks

    result, got, chunks = asyncio.run(run())
    assert got == rows
    assert result.tag == f"SELECT {len(rows)}"
    assert [f.name for f in result.fields] == [f"c{n}" for n in range(columns)]
    assert [n["M"] for n in result.notices] == ["hi"]
    assert all(size == 3 for size in chunks[:-1])


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("SVCMDHPpqWstcdnFLR"),
        st.text(max_size=30).map(lambda t: t.replace("\x00", "")),
    )
)
def test_every_error_field_is_read_back_as_sent(fields: dict[str, str]) -> None:
    body = b"".join(code.encode() + text.encode() + b"\x00" for code, text in fields.items())
    assert wire.parse_fields(body + b"\x00") == fields


_TERMINATED = _message(b"E", b"SFATAL\x00VFATAL\x00C57P01\x00Mterminating connection\x00\x00")


@pytest.mark.parametrize("completed", [False, True])
def test_a_termination_says_whether_the_statement_had_completed_before_it(
    completed: bool,
) -> None:
    """After CommandComplete, an autocommit statement commits at Sync: a FATAL error
    then (before ReadyForQuery) may follow its commit, and the error says so."""

    async def run() -> wire.ServerError:
        connection = wire.WireConnection()
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection._starting = False
        running = asyncio.ensure_future(connection.run("INSERT", [], 3, lambda *_: None))
        await asyncio.sleep(0)
        stream = _message(b"1", b"") + _message(b"2", b"") + _message(b"n", b"")
        if completed:
            stream += _message(b"C", b"INSERT 0 1\x00")
        connection.data_received(stream + _TERMINATED)
        connection.connection_lost(None)
        with pytest.raises(wire.ServerError) as raised:
            await running
        return raised.value

    error = asyncio.run(run())
    assert error.sqlstate == "57P01"
    assert error.after_complete is completed


@pytest.fixture
def legacy_logins(postgres: EmbeddedPostgres) -> Iterator[None]:
    """Two roles that log in the older ways: MD5 (a password stored as MD5, `md5` in
    pg_hba) and cleartext (`password` in pg_hba); lines for them alone, removed after."""
    hba = postgres.data_dir / "pg_hba.conf"
    before = hba.read_text()
    with postgres.admin() as admin:
        admin.execute("SET password_encryption = 'md5'")
        for role in ("wire_md5", "wire_clear"):
            admin.execute(f"DROP ROLE IF EXISTS {role}")
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'legacy-secret'")
        hba.write_text("local all wire_md5 md5\nlocal all wire_clear password\n" + before)
        admin.execute("SELECT pg_reload_conf()")
    yield
    hba.write_text(before)
    with postgres.admin() as admin:
        admin.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("role", ["wire_md5", "wire_clear"])
async def test_md5_and_cleartext_logins_are_answered_and_a_wrong_password_refused(
    postgres: EmbeddedPostgres, legacy_logins: None, role: str
) -> None:
    target = wire.Target.of({"host": postgres.socket_dir})
    connection = await wire.connect(target, role, "postgres", "legacy-secret", {})
    try:
        _, rows = await _rows(connection, "SELECT current_user")
        assert rows == [[role]]
        assert connection.authentication == {"wire_md5": "md5", "wire_clear": "password"}[role]
    finally:
        connection.close()
    with pytest.raises(wire.ServerError) as raised:
        await wire.connect(target, role, "postgres", "not-it", {})
    assert raised.value.sqlstate == "28P01"
