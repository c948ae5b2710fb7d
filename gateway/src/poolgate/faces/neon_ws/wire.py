"""The few Postgres wire-protocol messages a WebSocket session reads or writes itself.

Everything else passes through as bytes. Message layout (protocol 3.0): a type byte,
then a big-endian int32 length that counts itself and the body; the start-up packets
(StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no type byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP_BYTES = 10_000  # as Postgres: a longer start-up packet is refused

# client -> server message types the session looks at
PASSWORD = ord("p")
QUERY = ord("Q")
SYNC = ord("S")
FUNCTION_CALL = ord("F")
TERMINATE = ord("X")
# server -> client
READY_FOR_QUERY = ord("Z")


class ProtocolViolation(Exception):
    """Raised when a client's bytes are not the Postgres protocol the session expects."""


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def authentication_cleartext() -> bytes:
    return _message(b"R", struct.pack("!I", 3))


def authentication_ok() -> bytes:
    return _message(b"R", struct.pack("!I", 0))


def parameter_status(name: str, value: str) -> bytes:
    return _message(b"S", name.encode() + b"\0" + value.encode() + b"\0")


def backend_key_data(process_id: int, secret: int) -> bytes:
    return _message(b"K", struct.pack("!II", process_id, secret))


def ready_for_query(status: bytes = b"I") -> bytes:
    return _message(b"Z", status)


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    fields = [b"S" + severity.encode(), b"V" + severity.encode()]
    fields += [b"C" + sqlstate.encode(), b"M" + message.encode()]
    return _message(b"E", b"\0".join(fields) + b"\0\0")


@dataclass
class Startup:
    """What a StartupMessage asked for."""

    parameters: dict[str, str]

    @property
    def user(self) -> str:
        return self.parameters.get("user", "")

    @property
    def database(self) -> str:
        return self.parameters.get("database") or self.user


def parse_startup_parameters(body: bytes) -> Startup:
    """The body of a StartupMessage after its protocol version: name/value C strings."""
    parts = body.split(b"\0")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolViolation("the start-up packet's parameters are not terminated")
    words = parts[:-2]
    if len(words) % 2:
        raise ProtocolViolation("a start-up parameter has no value")
    try:
        decoded = [word.decode() for word in words]
    except UnicodeDecodeError:
        raise ProtocolViolation("a start-up parameter is not UTF-8") from None
    parameters = dict(zip(decoded[::2], decoded[1::2], strict=True))
    if not parameters.get("user"):
        raise ProtocolViolation("no PostgreSQL user name specified in start-up packet")
    return Startup(parameters)


@dataclass
class ClientReader:
    """Bytes from the client, read as start-up packets and typed messages, in order.

    `limit` bounds a message's declared length: a longer one is refused as soon as its
    length is seen, never buffered."""

    limit: int
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def startup_packet(self) -> tuple[int, bytes] | None:
        """(code, body) of the next start-up packet, or None until it has arrived."""
        if len(self.buffer) < 4:
            return None
        (length,) = struct.unpack_from("!I", self.buffer)  # judged as soon as it is here
        if not 8 <= length <= MAX_STARTUP_BYTES:
            raise ProtocolViolation(f"invalid length of start-up packet: {length}")
        if len(self.buffer) < length:
            return None
        (code,) = struct.unpack_from("!I", self.buffer, 4)
        body = bytes(self.buffer[8:length])
        del self.buffer[:length]
        return code, body

    def message(self) -> tuple[int, bytes] | None:
        """(type, body) of the next typed message, or None until it has arrived."""
        if len(self.buffer) < 5:
            return None
        kind = self.buffer[0]
        (length,) = struct.unpack_from("!I", self.buffer, 1)
        self._check_length(length)
        if len(self.buffer) < 1 + length:
            return None
        body = bytes(self.buffer[5 : 1 + length])
        del self.buffer[: 1 + length]
        return kind, body

    def take_all(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def _check_length(self, length: int) -> None:
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length - 4 > self.limit:
            raise MessageTooLarge(length - 4, self.limit)


class MessageTooLarge(ProtocolViolation):
    """Raised when a client message declares more bytes than the gateway accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes is over the limit of {limit}")


@dataclass
class MessageSplitter:
    """Follows message boundaries in a byte stream without keeping the messages: `feed`
    returns the bytes to pass on now and, for every message whose header they complete,
    its type and (for ReadyForQuery) its status byte. A header that is not whole yet is
    held back until it is, so a message of type `stop_at` is never passed on: the
    stream is cut just before it and `stopped` is set.

    `limit` (or None) bounds a message's declared length: a longer one raises at once."""

    limit: int | None = None
    stop_at: int | None = None
    stopped: bool = False
    _held: bytes = b""
    _remaining: int = 0  # body bytes of the current message still to come

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int | None]]]:
        if self._held:
            data, self._held = self._held + data, b""
        events: list[tuple[int, int | None]] = []
        position, size = 0, len(data)
        while position < size:
            if self._remaining:
                step = min(self._remaining, size - position)
                self._remaining -= step
                position += step
                continue
            if size - position < 5:
                self._held = data[position:]
                return data[:position], events
            kind = data[position]
            length = int.from_bytes(data[position + 1 : position + 5], "big")
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length}")
            if self.limit is not None and length - 4 > self.limit:
                raise MessageTooLarge(length - 4, self.limit)
            if kind == self.stop_at:
                self.stopped = True
                return data[:position], events
            status: int | None = None
            if kind == READY_FOR_QUERY and length > 4:
                if size - position < 6:
                    self._held = data[position:]
                    return data[:position], events
                status = data[position + 5]
            events.append((kind, status))
            position += 5
            self._remaining = length - 4
        return data, events

    @property
    def between_messages(self) -> bool:
        return not self._held and not self._remaining
