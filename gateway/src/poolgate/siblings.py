"""The other worker processes of one gateway, reached over unix sockets.

With `--workers N`, N processes share the listening port, each with its own pools and
(with `--cache memory`) its own cache. What must hold for the gateway as a whole goes
through here:

- an invalidation reaches every worker's cache before the write that caused it is
  answered (each sibling acknowledges); a sibling that cannot be reached in time makes
  the invalidation fail as an unreachable Redis does (`CacheUnavailable`): the write is
  answered with `Poolgate-Invalidate-Status: failed`. A sibling whose socket is gone
  is not running, and a worker that starts begins with an empty cache: nothing to drop;
- a failed login counts against the client and user in every worker, and a login
  Postgres accepted exempts that credential from the throttle in every worker;
- `/metrics` sums every worker's samples;
- a call on an interactive transaction is answered by the worker that holds its
  connection (the id names it): another worker forwards the call and relays the answer.

Each worker listens on `<dir>/<index>.sock` before it serves HTTP. Messages are one
JSON object per line; every request gets one reply line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from poolgate.core.cache_stores import CacheUnavailable

log = logging.getLogger("poolgate.siblings")

REPLY_TIMEOUT = 2.0  # seconds a sibling may take to answer
MAX_LINE = 64 * 1024 * 1024  # a metrics reply of many pools is the longest line

Handlers = dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    message: dict[str, Any],
    seconds: float,
) -> Any:
    """Send one request line; its reply, within `seconds`."""
    async with asyncio.timeout(seconds):
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    if not line:
        raise ConnectionResetError("the sibling hung up")
    return json.loads(line)["reply"]


class _Link:
    """One connection to one sibling, used by one request at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ask(self, message: dict[str, Any]) -> Any:
        """The sibling's reply; None if it is not running (no socket, nobody listening).
        A kept connection that turns out broken (the sibling died and was restarted
        since) is replaced once: the new process answers for itself. A message may so
        arrive twice: drops and reads do not mind; a failed login counted twice errs
        towards throttling."""
        async with self._lock:
            reused = self._streams is not None
            try:
                return await self._ask_once(message)
            except (ConnectionError, asyncio.IncompleteReadError):
                if not reused:
                    raise
            return await self._ask_once(message)

    async def _ask_once(self, message: dict[str, Any]) -> Any:
        try:
            if self._streams is None:
                self._streams = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        try:
            return await _exchange(*self._streams, message, REPLY_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Siblings:
    def __init__(self, directory: Path, index: int, count: int) -> None:
        self.index = index
        self.directory = directory
        self._path = directory / f"{index}.sock"
        self._links = [
            _Link(directory / f"{other}.sock") for other in range(count) if other != index
        ]
        self._handlers: Handlers = {}
        self._server: asyncio.AbstractServer | None = None
        self._serving: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self, handlers: Handlers) -> None:
        """Answer siblings' requests with `handlers` (by message "op")."""
        self._handlers = handlers
        self._path.unlink(missing_ok=True)  # a crashed predecessor's socket
        self._server = await asyncio.start_unix_server(self._serve, self._path, limit=MAX_LINE)

    async def close(self) -> None:
        """Stop answering: links closed, and every connection being served hung up, so
        each `_serve` ends by itself (a cancelled one would be reported as an error by
        asyncio's streams at shutdown)."""
        for link in self._links:
            link.close()
        if self._server is not None:
            self._server.close()
        for writer in self._serving.values():
            writer.close()
        if self._serving:
            await asyncio.wait(set(self._serving), timeout=REPLY_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
        self._path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request at a time per connection; an asker that hangs up before the reply
        cancels the work (a forwarded call whose client went away)."""
        task = asyncio.current_task()
        if task is not None:
            self._serving[task] = writer
        try:
            while line := await reader.readline():
                message = json.loads(line)
                work = asyncio.ensure_future(self._handlers[message["op"]](message))
                hangup = asyncio.ensure_future(reader.read(1))  # nothing else comes first
                await asyncio.wait({work, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
                    return
                hangup.cancel()  # and wait for it: the next readline must be the only reader
                with contextlib.suppress(asyncio.CancelledError):
                    await hangup
                writer.write(json.dumps({"reply": work.result()}).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._serving.pop(task, None)

    async def forward(self, index: int, message: dict[str, Any], seconds: float) -> Any:
        """Ask sibling `index` on a connection of this call's own (a long call never
        holds up invalidations); cancelling this cancels the work over there."""
        reader, writer = await asyncio.open_unix_connection(
            self._path.parent / f"{index}.sock", limit=MAX_LINE
        )
        try:
            return await _exchange(reader, writer, message, seconds)
        finally:
            writer.close()

    async def ask_all(self, message: dict[str, Any]) -> list[Any]:
        """Every running sibling's reply (raises if one fails or is too slow)."""
        replies = await asyncio.gather(*(link.ask(message) for link in self._links))
        return [reply for reply in replies if reply is not None]

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        """Drop `tags` in every sibling's cache; the entries they dropped."""
        try:
            replies = await self.ask_all({"op": "invalidate", "tags": list(tags)})
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("a sibling worker did not confirm an invalidation: %r", exc)
            raise CacheUnavailable(f"a sibling worker did not confirm: {exc!r}") from None
        return sum(int(reply) for reply in replies)

    async def login_failed(self, address: str, user: str) -> None:
        """Count a failed login in every sibling's throttle (best effort)."""
        try:
            await self.ask_all({"op": "login_failed", "address": address, "user": user})
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("a sibling worker did not record a failed login: %r", exc)

    async def login_succeeded(self, user: str, database: str, password: str) -> None:
        """Tell every sibling's throttle that Postgres accepted this login (best effort:
        a sibling not told throttles that credential as any other)."""
        message = {"op": "login_succeeded", "user": user, "database": database}
        try:
            await self.ask_all({**message, "password": password})
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("a sibling worker did not record an accepted login: %r", exc)

    async def metrics(self) -> list[str]:
        """Every running sibling's metrics exposition; raises if one cannot answer."""
        return [str(text) for text in await self.ask_all({"op": "metrics"})]
