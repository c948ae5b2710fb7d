"""A bare Postgres-over-WebSocket client for the cases a real driver cannot be made to
produce (a dropped socket mid-transaction, a client that does not read, hostile frames).
Real drivers are tested in tests/gateway/test_neon_websocket.py."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import aiohttp


def startup_message(user: str, database: str, parameters: dict[str, str] | None = None) -> bytes:
    pairs = {"user": user, "database": database, **(parameters or {})}
    body = struct.pack("!I", 196608)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def password_message(password: str) -> bytes:
    return message(b"p", password.encode() + b"\0")


def query_message(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


@dataclass
class Reply:
    """Server messages up to a ReadyForQuery (or the socket's end)."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    closed: bool = False

    def kinds(self) -> bytes:
        return b"".join(kind for kind, _ in self.messages)

    def errors(self) -> list[dict[str, str]]:
        found = []
        for kind, body in self.messages:
            if kind == b"E":
                fields = {}
                for part in body.split(b"\0"):
                    if part:
                        fields[chr(part[0])] = part[1:].decode()
                found.append(fields)
        return found

    def status(self) -> bytes | None:
        last = [body for kind, body in self.messages if kind == b"Z"]
        return last[-1] if last else None

    def parameter_status(self) -> dict[str, str]:
        found = {}
        for kind, body in self.messages:
            if kind == b"S":
                name, value, _ = body.split(b"\0")
                found[name.decode()] = value.decode()
        return found

    def data_rows(self) -> int:
        return sum(1 for kind, _ in self.messages if kind == b"D")


class WebSocketPostgres:
    """One session: `await connect()`, `await query(sql)`, `await close()`."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        database: str,
        parameters: dict[str, str] | None = None,
    ) -> None:
        self.url, self.user, self.password, self.database = url, user, password, database
        self.parameters = parameters
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._buffer = bytearray()

    async def open(self) -> aiohttp.ClientWebSocketResponse:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        return self.ws

    async def connect(self) -> Reply:
        """Start-up and password at once (as the driver pipelines them)."""
        ws = await self.open()
        await ws.send_bytes(
            startup_message(self.user, self.database, self.parameters)
            + password_message(self.password)
        )
        return await self.read_reply()

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def query(self, sql: str) -> Reply:
        await self.send(query_message(sql))
        return await self.read_reply()

    async def read_reply(self) -> Reply:
        """Messages until ReadyForQuery, an ErrorResponse that closes, or the end."""
        reply = Reply()
        while True:
            parsed = self._next_message()
            if parsed is None:
                if not await self._receive():
                    reply.closed = True
                    return reply
                continue
            reply.messages.append(parsed)
            kind, body = parsed
            if kind == b"Z":
                return reply
            if kind == b"R" and body[:4] == struct.pack("!I", 3):
                continue  # the cleartext password request, already answered
            if kind == b"E" and b"SFATAL" in body:
                reply.closed = not await self._receive()
                return reply

    def _next_message(self) -> tuple[bytes, bytes] | None:
        if len(self._buffer) < 5:
            return None
        (length,) = struct.unpack_from("!I", self._buffer, 1)
        if len(self._buffer) < 1 + length:
            return None
        kind, body = bytes(self._buffer[:1]), bytes(self._buffer[5 : 1 + length])
        del self._buffer[: 1 + length]
        return kind, body

    async def _receive(self) -> bool:
        assert self.ws is not None
        frame = await self.ws.receive()
        if frame.type == aiohttp.WSMsgType.BINARY:
            self._buffer += frame.data
            return True
        return False

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()
