"""The gateway's PostgreSQL driver: a lean wire-protocol client (issue 23 (c)).

It speaks only what the gateway sends: the start-up with SCRAM-SHA-256 (or MD5, or
cleartext) authentication, then statements over the extended query protocol
(Parse/Bind/Describe/Execute/Sync in one write, unnamed statement and portal, untyped
text parameters, text results), and CancelRequest on a separate connection. Results
come back as they are on the wire: each field's RowDescription entry (table OID,
column number, type OID, size, modifier) and each DataRow's cells as text, so nothing
is decoded into Python objects that is only going to be written out as text again.

Contract: one statement at a time per connection (the caller holds it exclusively);
`run` hands rows to `on_chunk` every `rows_per_chunk` rows, as they arrive. An
exception from `on_chunk` ends `run` at once with that exception; it, or a cancelled
await (a deadline, a client gone), leaves the statement running on the server, which is
then asked to cancel it in the background (`CANCEL_TIMEOUT`), and the connection is not
`idle`: the caller discards it. A server error leaves it idle (or in a failed
transaction) and usable. `broken` says the connection is gone: closed by either side,
or sent something unasked while idle (a FATAL notice of a shutdown or termination).
The choice of this driver over psycopg and asyncpg, measured, is in the gateway README
("Choice of parts").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("poolgate.wire")

_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
_FIELD = struct.Struct("!IhIhih")
_CANCEL_CODE = 80877102
_SSL_CODE = 80877103
_PROTOCOL_3 = 196608
CANCEL_TIMEOUT = 1.0  # seconds a cancel request may take before it is abandoned


class WireError(Exception):
    """Raised when the connection breaks or the server says something unexpected."""


class PasswordRequired(WireError):
    """Raised when the server asks for a password and the client gave none."""


class CopyRefused(WireError):
    """Raised for a statement that starts COPY: the connection is closed at once (the
    server would wait for COPY data, or send it)."""


class ServerError(Exception):
    """Raised for an ErrorResponse: `fields` holds every field the server sent;
    `after_complete`: the statement had already answered CommandComplete (an error
    then, such as a termination before ReadyForQuery, may follow its commit)."""

    def __init__(self, fields: dict[str, str], after_complete: bool = False) -> None:
        super().__init__(fields.get("M", "server error"))
        self.fields = fields
        self.after_complete = after_complete

    @property
    def sqlstate(self) -> str | None:
        return self.fields.get("C")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    table_oid: int
    column: int
    type_oid: int
    size: int
    modifier: int


Row = list[str | None]
ChunkCallback = Callable[[list[Field], list[Row]], None]


@dataclass(slots=True)
class Result:
    fields: list[Field]
    tag: str
    notices: list[dict[str, str]] = field(default_factory=list)


def parse_fields(body: bytes) -> dict[str, str]:
    """An ErrorResponse or NoticeResponse body: code byte, text, NUL; a NUL ends it."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(body) and body[position] != 0:
        end = body.index(b"\x00", position + 1)
        fields[chr(body[position])] = body[position + 1 : end].decode("utf-8", "replace")
        position = end + 1
    return fields


def parse_row_description(body: bytes) -> list[Field]:
    (count,) = struct.unpack_from("!h", body, 0)
    fields: list[Field] = []
    position = 2
    for _ in range(count):
        end = body.index(b"\x00", position)
        name = body[position:end].decode()
        table, column, type_oid, size, modifier, _format = _FIELD.unpack_from(body, end + 1)
        fields.append(Field(name, table, column, type_oid, size, modifier))
        position = end + 1 + _FIELD.size
    return fields


def parse_data_row(body: bytes) -> Row:
    (count,) = struct.unpack_from("!h", body, 0)
    cells: Row = []
    position = 2
    for _ in range(count):
        (length,) = _INT32.unpack_from(body, position)
        position += 4
        if length < 0:
            cells.append(None)
        else:
            cells.append(body[position : position + length].decode())
            position += length
    return cells


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + _INT32.pack(len(body) + 4) + body


def _cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


_SYNC = _message(b"S", b"")


def drop_rows(fields: list[Field], rows: list[Row]) -> None:
    """For `run`: rows nobody reads (a reset script's, a set_config's)."""


_DESCRIBE_PORTAL = _message(b"D", b"P\x00")
_EXECUTE_ALL = _message(b"E", b"\x00" + _INT32.pack(0))


def extended_query(query: str, params: Sequence[str | None]) -> bytes:
    """Parse, Bind, Describe, Execute, Sync, with the unnamed statement and portal: one
    write for one statement."""
    parse = _message(b"P", b"\x00" + _cstring(query) + b"\x00\x00")
    bind = [b"\x00\x00\x00\x00", struct.pack("!h", len(params))]
    for value in params:
        if value is None:
            bind.append(b"\xff\xff\xff\xff")
        else:
            data = value.encode()
            bind.append(_INT32.pack(len(data)))
            bind.append(data)
    bind.append(b"\x00\x00")  # every result column in text
    return parse + _message(b"B", b"".join(bind)) + _DESCRIBE_PORTAL + _EXECUTE_ALL + _SYNC


class _Scram:
    """SCRAM-SHA-256 without channel binding (RFC 5802, 7677)."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()  # SASLprep is the identity for most passwords
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        parts = dict(item.split("=", 1) for item in server_first.decode().split(","))
        if not parts["r"].startswith(self.nonce):
            raise WireError("SCRAM: the server's nonce does not extend ours")
        salt = base64.b64decode(parts["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, int(parts["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={parts['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        verifier = dict(item.split("=", 1) for item in server_final.decode().split(","))
        if base64.b64decode(verifier.get("v", "")) != self.server_signature:
            raise WireError("SCRAM: the server's signature is wrong")


class WireConnection(asyncio.Protocol):
    """One server connection; see the module docstring for the contract."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._messages: list[tuple[bytes, bytes]] = []  # during start-up only
        self._starting = True
        self.broken = False
        self.idle = False
        self.transaction_status = b""  # of the last ReadyForQuery: I, T or E
        self._running = False  # a statement was sent and its ReadyForQuery not yet read
        self.process_id = 0
        self.secret_key = b""
        self.address: tuple[str, ...] | str = ""
        self.parameters: dict[str, str] = {}
        self.authentication = "trust"  # how the server had it log in (for diagnostics)
        # the running statement's state
        self._on_chunk: ChunkCallback | None = None
        self._chunk_rows = 1000
        self._rows: list[Row] = []
        self._fields: list[Field] = []
        self._tag = ""
        self._error: BaseException | None = None
        self._notices: list[dict[str, str]] = []
        self._ssl_answer: asyncio.Future[bytes] | None = None
        # relay mode (start_relay .. end_relay)
        self._relay_data: Callable[[bytes], None] | None = None
        self._relay_lost: Callable[[Exception | None], None] | None = None
        self._reading_paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self.idle = False
        if self._error is not None:  # e.g. a FATAL error: the server's reason is the one
            self._wake()
        else:
            self._wake(WireError(f"the server closed the connection: {exc!r}"))
        self._relay_ended(exc)

    def data_received(self, data: bytes) -> None:
        if self._relay_data is not None:
            self._relay_data(data)
            return
        if self._ssl_answer is not None:  # the one byte that answers an SSLRequest
            answer, self._ssl_answer = self._ssl_answer, None
            if not answer.done():
                answer.set_result(data[:1])
            data = data[1:]
        buffer = self._buffer
        buffer += data
        position = 0
        end = len(buffer)
        while end - position >= 5:
            kind, length = _HEADER.unpack_from(buffer, position)
            if end - position < length + 1:
                break
            body = bytes(buffer[position + 5 : position + 1 + length])
            position += 1 + length
            try:
                self._handle(kind, body)
            except Exception as exc:  # a callback refused a chunk: `run` ends with it now
                self._on_chunk = None
                self._wake(exc)
        del buffer[:position]

    def _wake(self, error: BaseException | None = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(None)

    def _handle(self, kind: bytes, body: bytes) -> None:
        if kind == b"D":
            if self._on_chunk is not None:
                rows = self._rows
                rows.append(parse_data_row(body))
                if len(rows) >= self._chunk_rows:
                    self._rows = []
                    self._on_chunk(self._fields, rows)
        elif kind == b"T":
            self._fields = parse_row_description(body)
        elif kind == b"C":
            self._tag = body[:-1].decode()
            if self._on_chunk is not None and self._rows:
                rows, self._rows = self._rows, []
                self._on_chunk(self._fields, rows)
        elif kind == b"Z":
            self.transaction_status = body
            self.idle = body == b"I"
            self._running = False
            if self._starting:
                self._messages.append((kind, body))
            self._wake()
        elif kind == b"E":
            if self._error is None:
                self._error = ServerError(parse_fields(body), after_complete=bool(self._tag))
            if self._starting:
                self._wake()
            elif not self._running:  # unasked, while idle: the server is ending it
                self._transport_abort()
        elif kind == b"N":
            self._notices.append(parse_fields(body))
        elif kind in (b"1", b"2", b"3", b"n", b"s", b"I"):
            pass  # Parse/Bind/CloseComplete, NoData, PortalSuspended, EmptyQueryResponse
        elif kind == b"S":
            name, value, _ = body.split(b"\x00", 2)
            self.parameters[name.decode()] = value.decode()
        elif kind in (b"G", b"H", b"W"):
            self._error = self._error or CopyRefused("COPY is not supported over HTTP")
            self._transport_abort()
        elif kind == b"A":
            pass  # NotificationResponse: nobody listens here
        elif self._starting:
            self._messages.append((kind, body))
            self._wake()
        else:
            self._error = self._error or WireError(f"unexpected message {kind!r}")

    def _transport_abort(self) -> None:
        self.broken = True
        if self._transport is not None:
            self._transport.abort()

    async def _next_startup_message(self) -> tuple[bytes, bytes]:
        while not self._messages:
            if self._error is not None:
                raise self._error
            if self.broken:
                raise WireError("the server closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._messages.pop(0)

    async def _start(
        self, user: str, database: str, password: str | None, options: dict[str, str]
    ) -> None:
        assert self._transport is not None
        pairs = {"user": user, "database": database, **options}
        body = (
            _INT32.pack(_PROTOCOL_3)
            + b"".join(_cstring(k) + _cstring(v) for k, v in pairs.items())
            + b"\x00"
        )
        self._transport.write(_INT32.pack(len(body) + 4) + body)
        scram: _Scram | None = None
        while True:
            kind, body = await self._next_startup_message()
            if kind == b"R":
                (code,) = _INT32.unpack_from(body, 0)
                if code == 0:
                    continue
                if password is None:
                    raise PasswordRequired("fe_sendauth: no password supplied")
                if code == 3:
                    self.authentication = "password"
                    self._transport.write(_message(b"p", _cstring(password)))
                elif code == 5:
                    self.authentication = "md5"
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    digest = hashlib.md5(inner + body[4:8]).hexdigest()
                    self._transport.write(_message(b"p", _cstring("md5" + digest)))
                elif code == 10:
                    mechanisms = body[4:].split(b"\x00")
                    if b"SCRAM-SHA-256" not in mechanisms:
                        raise WireError("the server offers no SCRAM-SHA-256")
                    self.authentication = "scram-sha-256"
                    scram = _Scram(password)
                    first = scram.first()
                    self._transport.write(
                        _message(b"p", _cstring("SCRAM-SHA-256") + _INT32.pack(len(first)) + first)
                    )
                elif code == 11 and scram is not None:
                    self._transport.write(_message(b"p", scram.final(body[4:])))
                elif code == 12 and scram is not None:
                    scram.verify(body[4:])
                else:
                    raise WireError(f"unsupported authentication request {code}")
            elif kind == b"K":
                (self.process_id,) = _INT32.unpack_from(body, 0)
                self.secret_key = body[4:]
            elif kind == b"Z":
                self._starting = False
                self._notices.clear()
                return

    async def run(
        self,
        query: str,
        params: Sequence[str | None],
        rows_per_chunk: int,
        on_chunk: ChunkCallback,
    ) -> Result:
        """One statement over the extended protocol (unnamed: parsed on each run, so a
        schema change between runs never meets a stale plan); its fields and command tag."""
        if self.broken or self._transport is None:
            raise WireError("the connection is closed")
        # built first: a parameter that is not text (UnicodeEncodeError) sends nothing
        return await self._exchange(extended_query(query, params), rows_per_chunk, on_chunk)

    async def run_script(self, script: str) -> Result:
        """Statements separated by semicolons (an operator's reset query, say) over the
        simple query protocol; rows are dropped, the last command's tag is returned."""
        if self.broken or self._transport is None:
            raise WireError("the connection is closed")
        return await self._exchange(_message(b"Q", _cstring(script)), 1000, drop_rows)

    async def _exchange(
        self, message: bytes, rows_per_chunk: int, on_chunk: ChunkCallback
    ) -> Result:
        """Send one request, read its answer up to ReadyForQuery."""
        assert self._transport is not None
        if self._running:
            raise WireError("a statement is still running on this connection")
        self._on_chunk = on_chunk
        self._chunk_rows = rows_per_chunk
        self._rows = []
        self._fields = []
        self._tag = ""
        self._error = None
        self._notices = []
        self.idle = False
        self._running = True
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(message)
        try:
            await waiter
        finally:
            self._on_chunk = None
            if self._running and not self.broken:
                # ended before its ReadyForQuery (a refused chunk, a deadline, a client
                # gone): the server may still be running it; the caller discards this
                # connection, and nothing waits on a server that may not answer
                cancel_in_background(self)
        if self._error is not None:
            raise self._error
        return Result(self._fields, self._tag, self._notices)

    @property
    def tls(self) -> bool:
        return self._transport is not None and (
            self._transport.get_extra_info("ssl_object") is not None
        )

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if not self.broken:
                self._transport.write(_message(b"X", b""))
            self._transport.close()
        self.broken = True

    async def cancel(self) -> None:
        """CancelRequest on a new connection to the same server (the key it gave); done
        when the server hangs up, as it does once it has passed the request on (libpq's
        PQcancel waits for the same)."""
        packet = _INT32.pack(16) + _INT32.pack(_CANCEL_CODE) + _INT32.pack(self.process_id)
        packet += self.secret_key
        if isinstance(self.address, str):
            reader, writer = await asyncio.open_unix_connection(self.address)
        else:
            reader, writer = await asyncio.open_connection(self.address[0], int(self.address[1]))
        try:
            writer.write(packet)
            await writer.drain()
            await reader.read()  # the server sends nothing: EOF is its answer
        finally:
            writer.close()

    # --- relay mode: the byte stream as it is, for a face that speaks the protocol itself
    # (the WebSocket sessions). Nothing is parsed between start_relay and end_relay, so
    # what the server reports meanwhile (`parameters`, the transaction status) is the
    # caller's to follow; the pool's reset after it brings `parameters` up to date again.

    def start_relay(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        """From now on every byte from the server goes to `on_data` as it arrives (first
        any already here and not yet parsed), and the connection's end to `on_lost` (at
        once if it has ended). Only between statements; the connection is not `idle`
        until `end_relay` says so."""
        if self._relay_data is not None or self._running:
            raise WireError("a statement or a relay is running on this connection")
        self.idle = False
        self._relay_data, self._relay_lost = on_data, on_lost
        if self._buffer:
            pending = bytes(self._buffer)
            self._buffer.clear()
            on_data(pending)
        if self.broken:
            self._relay_ended(None)

    def write(self, data: bytes) -> None:
        """Bytes to the server as they are; `drain` waits while it does not read them."""
        if self.broken or self._transport is None or self._transport.is_closing():
            raise WireError("the connection is closed")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark again;
        `WireError` if the connection ends meanwhile."""
        await self._can_write.wait()
        if self.broken:
            raise WireError("the server closed the connection")

    def pause_reading(self) -> None:
        """Stop reading from the server (its bytes wait in the kernel, then it blocks)."""
        if not self._reading_paused and self._transport is not None:
            if not self._transport.is_closing():
                self._transport.pause_reading()
            self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def end_relay(self, idle: bool) -> None:
        """Back to statements. `idle`: the caller followed the stream to its end and the
        server is between messages, owes no answer and its last ReadyForQuery said 'I';
        anything else (False) leaves the connection for the caller to discard."""
        self._relay_data = self._relay_lost = None
        self.resume_reading()
        self.idle = idle and not self.broken
        self.transaction_status = b"I" if self.idle else b""

    # asyncio.Protocol's flow control, for `drain`
    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _relay_ended(self, exc: Exception | None) -> None:
        self._can_write.set()  # a waiting `drain` finds the connection broken
        on_lost, self._relay_lost = self._relay_lost, None
        if on_lost is not None:
            on_lost(exc)


_CANCELS: set[asyncio.Task[None]] = set()


def cancel_in_background(connection: WireConnection) -> None:
    """Ask the server to cancel what runs on `connection`, without waiting: the request
    goes out on its own connection, abandoned after `CANCEL_TIMEOUT` seconds."""
    task = asyncio.get_running_loop().create_task(_cancel_quietly(connection))
    _CANCELS.add(task)
    task.add_done_callback(_CANCELS.discard)


async def _cancel_quietly(connection: WireConnection) -> None:
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT):
            await connection.cancel()
    except (OSError, TimeoutError) as exc:  # a frozen or vanished server: it is gone anyway
        log.info("query cancellation not confirmed: %s", type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is, from the libpq keywords config reads (`host` a directory
    means a socket)."""

    host: str
    port: int
    sslmode: str
    sslrootcert: str | None
    sslcert: str | None = None
    sslkey: str | None = None

    @classmethod
    def of(cls, keywords: dict[str, str]) -> Target:
        return cls(
            keywords.get("host", "/var/run/postgresql"),
            int(keywords.get("port", "5432")),
            keywords.get("sslmode", "prefer"),
            keywords.get("sslrootcert"),
            keywords.get("sslcert"),
            keywords.get("sslkey"),
        )


def _tls_context(target: Target) -> ssl.SSLContext:
    """libpq's sslmode: require (and prefer, allow) encrypt without checking the
    certificate, verify-ca checks it against sslrootcert (`system`: the system's CAs),
    verify-full the name too; sslcert and sslkey are the client's certificate."""
    root = None if target.sslrootcert in (None, "system") else target.sslrootcert
    context = ssl.create_default_context(cafile=root)
    if target.sslmode in ("require", "prefer", "allow"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif target.sslmode == "verify-ca":
        context.check_hostname = False
    if target.sslcert:
        context.load_cert_chain(target.sslcert, target.sslkey)
    return context


async def _open(target: Target) -> WireConnection:
    """A transport to the server, with TLS negotiated as `sslmode` asks; not logged in."""
    loop = asyncio.get_running_loop()
    connection: WireConnection
    if target.host.startswith("/"):
        path = f"{target.host}/.s.PGSQL.{target.port}"
        _, connection = await loop.create_unix_connection(WireConnection, path)
        connection.address = path
        return connection
    transport, connection = await loop.create_connection(WireConnection, target.host, target.port)
    connection.address = (target.host, str(target.port))
    if target.sslmode == "disable":
        return connection
    try:
        answer = connection._ssl_answer = loop.create_future()
        transport.write(_INT32.pack(8) + _INT32.pack(_SSL_CODE))
        if await answer == b"S":
            tls = await loop.start_tls(
                transport, connection, _tls_context(target), server_hostname=target.host
            )
            assert tls is not None
            connection.connection_made(tls)
        elif target.sslmode in ("require", "verify-ca", "verify-full"):
            raise WireError("the server refused TLS")
    except BaseException:
        transport.close()
        raise
    return connection


async def connect(
    target: Target,
    user: str,
    database: str,
    password: str | None,
    options: dict[str, str],
) -> WireConnection:
    """A logged-in connection; `ServerError` for a refusal, `WireError`/`OSError` else."""
    connection = await _open(target)
    try:
        await connection._start(user, database, password, options)
    except BaseException:
        connection.close()
        raise
    return connection


CANNOT_CONNECT_NOW = "57P03"


async def ping(target: Target) -> str:
    """Whether the server accepts connections, as libpq's PQping asks it, without
    logging in: `ok` once it answers a start-up (with a request for a password, or a
    refusal of the probe's role), `reject` while it cannot take connections (starting,
    stopping, recovering), `no_response` if it cannot be reached. The caller bounds it."""
    try:
        connection = await _open(target)
    except (OSError, WireError, ssl.SSLError):
        return "no_response"
    try:
        await connection._start("poolgate_ping", "postgres", None, {})
    except PasswordRequired:
        return "ok"
    except ServerError as refusal:
        return "reject" if refusal.sqlstate == CANNOT_CONNECT_NOW else "ok"
    except (OSError, WireError):
        return "no_response"
    finally:
        connection.close()
    return "ok"
