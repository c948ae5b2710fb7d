"""The server's bytes on their way to a WebSocket client, held within a bound.

A session's connection hands its bytes over as they arrive (`WireConnection` in relay
mode); the session sends them on as fast as the client takes them. Once `limit` bytes
are held, the connection is no longer read until the session has taken them: a client
that does not read leaves the server blocked writing, and the gateway's memory as it
was.
"""

from __future__ import annotations

import asyncio

from poolgate.core.wire import WireConnection

HELD_BYTES = 64 * 1024


class ServerBytes:
    """Starts the connection's relay mode; `take` hands over what came since."""

    def __init__(self, connection: WireConnection, limit: int = HELD_BYTES) -> None:
        self._connection = connection
        self._limit = limit
        self._chunks: list[bytes] = []
        self._held = 0
        self._ended = False
        self._arrived = asyncio.Event()
        connection.start_relay(self._data, self._lost)

    def _data(self, data: bytes) -> None:
        self._chunks.append(data)
        self._held += len(data)
        self._arrived.set()
        if self._held >= self._limit:
            self._connection.pause_reading()

    def _lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._arrived.set()

    async def take(self) -> bytes | None:
        """Every byte held, once there is one; None when the connection has ended and
        everything it sent was taken."""
        while not self._chunks:
            if self._ended:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._held = 0
        self._connection.resume_reading()
        return data
