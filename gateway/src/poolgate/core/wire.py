"""A lean PostgreSQL wire-protocol client: the prototype driver of issue 23 (c).

It speaks only what the gateway sends: the start-up with SCRAM-SHA-256 (or MD5, or
cleartext) authentication, then statements over the extended query protocol
(Parse/Bind/Describe/Execute/Sync in one write, unnamed statement and portal, untyped
text parameters, text results), and CancelRequest on a separate connection. Results
come back as they are on the wire: each field's RowDescription entry (table OID,
column number, type OID, size, modifier) and each DataRow's cells as text, so nothing
is decoded into Python objects that is only going to be written out as text again.

Contract: one statement at a time per connection (the caller holds it exclusively);
`run` hands rows to `on_chunk` every `rows_per_chunk` rows, as they arrive; an
exception from `on_chunk`, a server error or a cancelled await leave the connection
for the caller to discard (`broken`/`idle` say whether it may be reused). It is not the
default driver: `POOLGATE_DRIVER=wire` selects it for measurement (see the gateway
README, "Choice of parts").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
_FIELD = struct.Struct("!IhIhih")
_CANCEL_CODE = 80877102
_SSL_CODE = 80877103
_PROTOCOL_3 = 196608
PREPARED_PER_CONNECTION = 100

# ErrorResponse / NoticeResponse field codes, by the names psycopg's Diagnostic uses.
ERROR_FIELDS = {
    "S": "severity_nonlocalized",
    "V": "severity",
    "C": "sqlstate",
    "M": "message_primary",
    "D": "message_detail",
    "H": "message_hint",
    "P": "statement_position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "context",
    "s": "schema_name",
    "t": "table_name",
    "c": "column_name",
    "d": "datatype_name",
    "n": "constraint_name",
    "F": "source_file",
    "L": "source_line",
    "R": "source_function",
}


class WireError(Exception):
    """Raised when the connection breaks or the server says something unexpected."""


class ServerError(Exception):
    """Raised for an ErrorResponse: `fields` holds every field the server sent."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "server error"))
        self.fields = fields

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
_DESCRIBE_PORTAL = _message(b"D", b"P\x00")
_EXECUTE_ALL = _message(b"E", b"\x00" + _INT32.pack(0))


def extended_query(
    query: str, params: Sequence[str | None], name: bytes = b"", parsed: bool = False
) -> bytes:
    """Parse (unless the named statement is `parsed` already), Bind, Describe, Execute,
    Sync: one write for one statement."""
    parse = b"" if parsed else _message(b"P", name + b"\x00" + _cstring(query) + b"\x00\x00")
    bind = [b"\x00" + name + b"\x00\x00\x00", struct.pack("!h", len(params))]
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
        self.process_id = 0
        self.secret_key = b""
        self.address: tuple[str, ...] | str = ""
        self.parameters: dict[str, str] = {}
        # the running statement's state
        self._on_chunk: ChunkCallback | None = None
        self._chunk_rows = 1000
        self._rows: list[Row] = []
        self._fields: list[Field] = []
        self._tag = ""
        self._error: BaseException | None = None
        self._notices: list[dict[str, str]] = []
        # named prepared statements (POOLGATE_DRIVER=wire-prepared): query -> name
        self.prepared: dict[str, bytes] = {}
        self._parsing: tuple[str, bytes] | None = None
        self._ssl_answer: asyncio.Future[bytes] | None = None
        self._generation = 0
        self._serial = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self.idle = False
        self._wake(WireError(f"the server closed the connection: {exc!r}"))

    def data_received(self, data: bytes) -> None:
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
            except Exception as exc:  # a callback refused a chunk: stop the statement
                if self._error is None:
                    self._error = exc
                self._on_chunk = None
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
            self.idle = body == b"I"
            if not self._starting:
                self._wake()
            else:
                self._messages.append((kind, body))
                self._wake()
        elif kind == b"E":
            if self._error is None:
                self._error = ServerError(parse_fields(body))
            if self._starting:
                self._wake()
        elif kind == b"N":
            self._notices.append(parse_fields(body))
        elif kind == b"1":
            if self._parsing is not None:  # ParseComplete: the named statement exists
                self.prepared[self._parsing[0]] = self._parsing[1]
                self._parsing = None
        elif kind in (b"2", b"3", b"n", b"s"):
            pass  # BindComplete, CloseComplete, NoData, PortalSuspended
        elif kind == b"S":
            name, value, _ = body.split(b"\x00", 2)
            self.parameters[name.decode()] = value.decode()
        elif kind in (b"G", b"H", b"W"):
            self._error = self._error or WireError("COPY is not supported over HTTP")
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
                    raise WireError("fe_sendauth: no password supplied")
                if code == 3:
                    self._transport.write(_message(b"p", _cstring(password)))
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    digest = hashlib.md5(inner + body[4:8]).hexdigest()
                    self._transport.write(_message(b"p", _cstring("md5" + digest)))
                elif code == 10:
                    mechanisms = body[4:].split(b"\x00")
                    if b"SCRAM-SHA-256" not in mechanisms:
                        raise WireError("the server offers no SCRAM-SHA-256")
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
        prepare: bool = False,
    ) -> Result:
        """One statement over the extended protocol; its fields and command tag.
        `prepare`: as a named statement, parsed once per connection (at most
        `PREPARED_PER_CONNECTION` of them; after an error, or anything that may have
        dropped them, the caller calls `forget_prepared`)."""
        if self.broken or self._transport is None:
            raise WireError("the connection is closed")
        self._on_chunk = on_chunk
        self._chunk_rows = rows_per_chunk
        self._rows = []
        self._fields = []
        self._tag = ""
        self._error = None
        self._notices = []
        self.idle = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        if prepare:
            name = self.prepared.get(query)
            if name is None:
                if len(self.prepared) >= PREPARED_PER_CONNECTION:
                    self._transport.write(
                        _message(b"C", b"S" + self.prepared.popitem()[1] + b"\x00")
                    )
                self._serial += 1
                name = f"pg_{self._generation}_{self._serial}".encode()
                self._parsing = (query, name)
                self._transport.write(extended_query(query, params, name))
            else:
                self._transport.write(extended_query(query, params, name, parsed=True))
        else:
            self._transport.write(extended_query(query, params))
        try:
            await waiter
        finally:
            self._on_chunk = None
        if self._error is not None:
            raise self._error
        return Result(self._fields, self._tag, self._notices)

    def forget_prepared(self) -> None:
        """After an error or a session reset: statements are parsed anew (and names the
        server may still hold are never reused: each new name differs)."""
        self._parsing = None
        self.prepared.clear()
        self._generation += 1

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if not self.broken:
                self._transport.write(_message(b"X", b""))
            self._transport.close()
        self.broken = True

    async def cancel(self) -> None:
        """CancelRequest on a new connection to the same server (the key it gave)."""
        loop = asyncio.get_running_loop()
        packet = _INT32.pack(16) + _INT32.pack(_CANCEL_CODE) + _INT32.pack(self.process_id)
        packet += self.secret_key
        if isinstance(self.address, str):
            _, writer = await asyncio.open_unix_connection(self.address)
        else:
            _, writer = await asyncio.open_connection(self.address[0], int(self.address[1]))
        writer.write(packet)
        await writer.drain()
        writer.close()
        del loop


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is, from libpq keywords (`host` a directory means a socket)."""

    host: str
    port: int
    sslmode: str
    sslrootcert: str | None

    @classmethod
    def of(cls, keywords: dict[str, str]) -> Target:
        return cls(
            keywords.get("host", "/var/run/postgresql"),
            int(keywords.get("port", "5432")),
            keywords.get("sslmode", "prefer"),
            keywords.get("sslrootcert"),
        )


def _tls_context(target: Target) -> ssl.SSLContext:
    """libpq's sslmode: require (and prefer, allow) encrypt without checking the
    certificate, verify-ca checks it against sslrootcert, verify-full the name too."""
    context = ssl.create_default_context(cafile=target.sslrootcert)
    if target.sslmode in ("require", "prefer", "allow"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif target.sslmode == "verify-ca":
        context.check_hostname = False
    return context


async def connect(
    target: Target,
    user: str,
    database: str,
    password: str | None,
    options: dict[str, str],
) -> WireConnection:
    """A logged-in connection; `ServerError` for a refusal, `WireError`/`OSError` else."""
    loop = asyncio.get_running_loop()
    connection: WireConnection
    if target.host.startswith("/"):
        path = f"{target.host}/.s.PGSQL.{target.port}"
        _, connection = await loop.create_unix_connection(WireConnection, path)
        connection.address = path
    else:
        transport, connection = await loop.create_connection(
            WireConnection, target.host, target.port
        )
        connection.address = (target.host, str(target.port))
        if target.sslmode != "disable":
            try:
                answer = connection._ssl_answer = loop.create_future()
                transport.write(_INT32.pack(8) + _INT32.pack(_SSL_CODE))
                if await answer == b"S":
                    tls = await loop.start_tls(
                        transport,
                        connection,
                        _tls_context(target),
                        server_hostname=target.host,
                    )
                    assert tls is not None
                    connection.connection_made(tls)
                elif target.sslmode in ("require", "verify-ca", "verify-full"):
                    raise WireError("the server refused TLS")
            except BaseException:
                transport.close()
                raise
    try:
        await connection._start(user, database, password, options)
    except BaseException:
        connection.close()
        raise
    return connection
