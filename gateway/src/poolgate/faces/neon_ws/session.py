"""One WebSocket session: Postgres's wire protocol in binary frames, as Neon's proxy
serves it to Neon's driver (`Pool`, `Client` and the ORMs on them).

The contract:
- Log-in as Neon's proxy does it, so the driver's defaults work: an SSLRequest is
  answered `N`; the client is asked for a cleartext password (TLS to the gateway protects
  it), which the core checks by logging in to Postgres (or trusts as the pool's accepted
  password, within --auth-recheck), through the same throttle as `/sql`. A client that
  pipelines its password (and first queries) before being asked loses nothing: bytes
  after the password wait in the buffer until the session starts. Then AuthenticationOk,
  the server's ParameterStatus, the gateway's own BackendKeyData and exactly one
  ReadyForQuery.
- The session holds one server connection of the (user, database) pool for its life,
  counted against --pool-size and --max-connections like any `/sql` request; a full pool
  makes it wait up to --acquire-timeout, then a 53300 ErrorResponse.
- Afterwards bytes are copied both ways, through the connection's relay mode (its own
  transport, so TLS to Postgres too). The session reads only message boundaries: the
  client's Query/Sync/FunctionCall (each owes one ReadyForQuery), its Terminate (never
  passed on: the server connection stays open for the pool) and the server's
  ReadyForQuery status. A client message longer than --max-request-bytes ends the session
  (54000) before it is buffered; a client that does not read stops the server side from
  being read (backpressure, bounded memory).
- At the end the connection goes back to its pool, reset as after a session-changing
  statement, only if it is idle with every answer delivered; in a transaction, with
  answers owed, or broken, it is closed (Postgres rolls back what was open).
- Idle for --ws-idle-timeout with nothing owed: 57P05 and close. Gateway shutdown: 57P01.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from poolgate.config import Settings
from poolgate.core.errors import AuthenticationFailed, TooManyLogins, Unavailable
from poolgate.core.pool import ConnectionPool, PoolRegistry
from poolgate.core.requests import Credentials
from poolgate.core.wire import ServerError, WireConnection, WireError, drop_rows
from poolgate.faces.neon_ws import wire
from poolgate.faces.neon_ws.relay import ServerBytes

T = TypeVar("T")

# Parameters Postgres reports to a client at start-up (GUC_REPORT), relayed as they are
# on the pooled connection once the client's own start-up parameters are applied.
REPORTED_PARAMETERS = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "scram_iterations",
    "search_path",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
)
# start-up parameters that name the session rather than set it
_NOT_SETTINGS = frozenset({"user", "database", "options"})


class SessionEnded(Exception):
    """Raised inside a session when it must end with an ErrorResponse to the client."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


@dataclass
class SessionStats:
    """What /metrics reports of WebSocket sessions, for this process."""

    open: int = 0
    opened_total: int = 0
    bytes_from_clients: int = 0
    bytes_to_clients: int = 0
    seconds_total: float = 0.0
    ended: dict[str, int] = field(default_factory=dict)  # by outcome


@dataclass
class Session:
    ws: web.WebSocketResponse
    client: str
    key: tuple[int, int]
    connection: WireConnection | None = None
    owed: int = 0  # ReadyForQuery messages the server still owes the client
    status: int = ord("I")
    outcome: str = "ok"
    user: str = ""
    database: str = ""
    while_draining: bool = False  # opened even while draining (the Accelerate companion's)


class Sessions:
    """Every open session of this process; the face's entry point is `serve`."""

    def __init__(self, pools: PoolRegistry, settings: Settings) -> None:
        self._pools = pools
        self._settings = settings
        self._open: dict[tuple[int, int], Session] = {}
        self._closing = False
        self._draining = False
        self.stats = SessionStats()
        self.on_end: Callable[[Session, float], None] | None = None

    async def serve(
        self, request: web.BaseRequest, while_draining: bool = False
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self._settings.max_request_bytes + 1024, autoping=True, heartbeat=None
        )
        await ws.prepare(request)
        session = Session(
            ws, request.remote or "unknown", (secrets.randbits(31), secrets.randbits(32))
        )
        session.while_draining = while_draining
        started = time.monotonic()
        self.stats.opened_total += 1
        self.stats.open += 1
        self._open[session.key] = session
        try:
            await self._run(session)
        except _ClientGone:
            pass
        except SessionEnded as ended:
            session.outcome = session.outcome if session.outcome != "ok" else ended.sqlstate
            await _send_quietly(ws, wire.error_response(ended.sqlstate, ended.message))
        except wire.ProtocolViolation as violation:
            session.outcome = "protocol_violation"
            sqlstate = "54000" if isinstance(violation, wire.MessageTooLarge) else "08P01"
            await _send_quietly(ws, wire.error_response(sqlstate, str(violation)))
        finally:
            del self._open[session.key]
            self.stats.open -= 1
            seconds = time.monotonic() - started
            self.stats.seconds_total += seconds
            self.stats.ended[session.outcome] = self.stats.ended.get(session.outcome, 0) + 1
            with suppress(Exception):
                await ws.close()
            if self.on_end is not None:
                self.on_end(session, seconds)
        return ws

    def refuse_new(self) -> None:
        """Draining: sessions already open go on; new ones are refused (57P03), but for
        the ones opened `while_draining`."""
        self._draining = True

    async def close(self) -> None:
        """Gateway shutdown: every session ends with 57P01 and its connection is closed."""
        self._closing = True
        for session in list(self._open.values()):
            session.outcome = "shutdown"
            await _send_quietly(
                session.ws,
                wire.error_response("57P01", "terminating connection due to administrator command"),
            )
            await session.ws.close()

    async def _run(self, session: Session) -> None:
        reader = wire.ClientReader(limit=self._settings.max_request_bytes)
        startup = await self._startup(session, reader)
        if startup is None:
            return
        session.user, session.database = startup.user, startup.database
        await session.ws.send_bytes(wire.authentication_cleartext())
        password = await self._password(session, reader)
        credentials = Credentials(startup.user, password, startup.database)
        pool = self._pools.pool_for(credentials)
        if self._draining and not session.while_draining:
            raise SessionEnded("57P03", "the gateway is shutting down")
        connection = await self._acquire(pool, credentials, session.client)
        session.connection = connection
        # The client's BackendKeyData names the server's real process, which serves this
        # session alone while it lasts, so pg_cancel_backend(processID) (Kysely's way to
        # cancel) reaches it; the secret stays the gateway's own, and a CancelRequest is
        # matched on both. A cancel sent after the session ended may reach a later user of
        # the same connection, who is always the same role.
        del self._open[session.key]
        session.key = (connection.process_id, session.key[1])
        self._open[session.key] = session
        reusable = False
        try:
            await self._apply(connection, startup)
            await session.ws.send_bytes(_greeting(connection, session.key))
            reusable = await self._relay(session, connection, reader.take_all())
        finally:
            session.connection = None
            await pool.release(connection, reusable=reusable, reset=True)

    async def _frame(self, session: Session, seconds: float) -> bytes | None:
        """The next binary frame's bytes; None when the client has closed. A text frame
        is not the Postgres protocol."""
        message = await session.ws.receive(timeout=seconds)
        if message.type == aiohttp.WSMsgType.BINARY:
            self.stats.bytes_from_clients += len(message.data)
            return bytes(message.data)
        if message.type == aiohttp.WSMsgType.TEXT:
            raise wire.ProtocolViolation("text frames are not the Postgres protocol")
        return None

    async def _read(
        self, session: Session, reader: wire.ClientReader, take: Callable[[], T | None]
    ) -> T:
        """What `take` reads from the client's bytes, once enough of them came; the session
        ends if the client goes during the log-in, or sends too little to log in with
        within --connect-timeout (08P01, as Postgres's authentication_timeout)."""
        while (found := take()) is None:
            try:
                data = await self._frame(session, self._settings.connect_timeout)
            except TimeoutError:
                raise SessionEnded("08P01", "the log-in did not arrive in time") from None
            if data is None:
                session.outcome = "client_gone"
                raise _ClientGone()
            reader.feed(data)
        return found

    async def _startup(self, session: Session, reader: wire.ClientReader) -> wire.Startup | None:
        while True:
            code, body = await self._read(session, reader, reader.startup_packet)
            if code in (wire.SSL_REQUEST, wire.GSSENC_REQUEST):
                await session.ws.send_bytes(b"N")  # TLS is the WebSocket's, not Postgres's
                continue
            if code == wire.CANCEL_REQUEST:
                await self._cancel(body)
                session.outcome = "cancel_request"
                return None
            if code != wire.PROTOCOL_3:
                raise SessionEnded(
                    "0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}"
                )
            startup = wire.parse_startup_parameters(body)
            if startup.parameters.get("replication", "false").lower() not in (
                "false",
                "off",
                "0",
                "no",
            ):
                raise SessionEnded("0A000", "replication connections are not supported")
            return startup

    async def _password(self, session: Session, reader: wire.ClientReader) -> str:
        while True:
            kind, body = await self._read(session, reader, reader.message)
            if kind != wire.PASSWORD:
                raise SessionEnded("08P01", f"expected a password message, got {chr(kind)!r}")
            if not body.endswith(b"\0") or b"\0" in body[:-1]:
                raise SessionEnded("08P01", "invalid password packet")
            try:
                return body[:-1].decode()
            except UnicodeDecodeError:
                raise SessionEnded("28P01", "password authentication failed") from None

    async def _acquire(
        self, pool: ConnectionPool, credentials: Credentials, client: str
    ) -> WireConnection:
        if self._closing:
            raise SessionEnded("57P03", "the gateway is shutting down")
        try:
            return await pool.acquire(credentials.password, client)
        except AuthenticationFailed:
            raise SessionEnded(
                "28P01", f'password authentication failed for user "{credentials.user}"'
            ) from None
        except TooManyLogins as throttled:
            raise SessionEnded(
                "53300", f"too many failed logins: try again in {throttled.retry_after} s"
            ) from None
        except Unavailable as unavailable:
            raise SessionEnded("53300", unavailable.message) from None

    async def _apply(self, connection: WireConnection, startup: wire.Startup) -> None:
        """The client's start-up settings (`application_name`, `-c name=value` in
        `options`, ...) on the pooled session, which is reset after it anyway. The
        server reports a changed GUC_REPORT parameter before each answer ends, so
        `connection.parameters` is current for the greeting afterwards."""
        settings = {k: v for k, v in startup.parameters.items() if k not in _NOT_SETTINGS}
        settings |= _options(startup.parameters.get("options", ""))
        try:
            for name, value in settings.items():
                setting = [name, value]
                await connection.run("SELECT set_config($1, $2, false)", setting, 1, drop_rows)
        except ServerError as error:
            raise SessionEnded(error.sqlstate or "22023", str(error).strip()) from None
        except WireError:
            session_lost = "the connection to the database was lost"
            raise SessionEnded("08006", session_lost) from None

    async def _cancel(self, body: bytes) -> None:
        if len(body) != 8:
            return
        key = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
        target = self._open.get(key)
        if target is not None and target.connection is not None:
            with suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._settings.connect_timeout):
                    await target.connection.cancel()

    async def _relay(self, session: Session, connection: WireConnection, pending: bytes) -> bool:
        """Copy bytes until either side ends; True if the connection may be reused (and
        then it is back in message mode, idle)."""
        to_server = wire.MessageSplitter(
            limit=self._settings.max_request_bytes, stop_at=wire.TERMINATE
        )
        to_client = wire.MessageSplitter()
        from_server = ServerBytes(connection)

        async def client_to_server(first: bytes) -> None:
            data: bytes | None = first
            while data is not None:
                if data:
                    forward, events = to_server.feed(data)
                    session.owed += sum(
                        1
                        for kind, _ in events
                        if kind in (wire.QUERY, wire.SYNC, wire.FUNCTION_CALL)
                    )
                    if forward:
                        connection.write(forward)
                        await connection.drain()  # a server that does not read stops us
                    if to_server.stopped:  # Terminate: the session ends, the connection stays
                        return
                data = await self._next_client_bytes(session)

        async def server_to_client() -> None:
            while (data := await from_server.take()) is not None:
                forward, events = to_client.feed(data)
                for kind, status in events:
                    if kind == wire.READY_FOR_QUERY and status is not None:
                        session.owed = max(0, session.owed - 1)
                        session.status = status
                if forward:
                    self.stats.bytes_to_clients += len(forward)
                    await session.ws.send_bytes(forward)
            session.outcome = "server_gone"

        reusable = False
        sending = asyncio.create_task(client_to_server(pending))
        receiving = asyncio.create_task(server_to_client())
        try:
            done, _ = await asyncio.wait((sending, receiving), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a protocol violation or a broken socket ends the session here
            # reusable when the server is idle between messages with every answer
            # delivered, whether the client said Terminate or just closed its socket
            reusable = (
                receiving not in done
                and session.owed == 0
                and session.status == ord("I")
                and to_server.between_messages
                and to_client.between_messages
            )
        except WireError:
            session.outcome = "server_gone"
        except (_ClientGone, ConnectionError, OSError, aiohttp.ClientError):
            session.outcome = session.outcome if session.outcome != "ok" else "client_gone"
        finally:
            for task in (sending, receiving):
                task.cancel()
            for task in (sending, receiving):
                with suppress(BaseException):
                    await task
            connection.end_relay(idle=reusable)
        return reusable

    async def _next_client_bytes(self, session: Session) -> bytes | None:
        """The next binary frame's bytes; None when the client has closed. Idle past
        --ws-idle-timeout with nothing owed ends the session (57P05)."""
        while True:
            try:
                data = await self._frame(session, self._settings.ws_idle_timeout)
            except TimeoutError:
                if session.owed:
                    continue  # a statement is still running: not idle
                session.outcome = "idle_timeout"
                await _send_quietly(
                    session.ws,
                    wire.error_response(
                        "57P05", "terminating connection due to idle-session timeout"
                    ),
                )
                return None
            if data is None and session.outcome == "ok":
                session.outcome = "client_gone"
            return data


class _ClientGone(Exception):
    """Raised when the client closed its WebSocket during the log-in."""


def _options(options: str) -> dict[str, str]:
    """`-c name=value` and `--name=value` pairs of a start-up `options` string."""
    words = options.replace("\\ ", "\0").split()
    found: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index].replace("\0", " ")
        if word == "-c" and index + 1 < len(words):
            word = "--" + words[index + 1].replace("\0", " ")
            index += 1
        if word.startswith("--") and "=" in word:
            name, _, value = word[2:].partition("=")
            found[name.replace("-", "_")] = value
        index += 1
    return found


def _greeting(connection: WireConnection, key: tuple[int, int]) -> bytes:
    parts = [wire.authentication_ok()]
    for name in REPORTED_PARAMETERS:
        value = connection.parameters.get(name)
        if value is not None:
            parts.append(wire.parameter_status(name, value))
    parts.append(wire.backend_key_data(*key))
    parts.append(wire.ready_for_query(b"I"))
    return b"".join(parts)


async def _send_quietly(ws: web.WebSocketResponse, data: bytes) -> None:
    if not ws.closed:
        with suppress(Exception):
            await ws.send_bytes(data)


class SessionCollector(Collector):
    """WebSocket sessions in /metrics: open, opened, bytes each way, time, how they ended."""

    def __init__(self, stats: SessionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily(
            "poolgate_ws_sessions_open", "WebSocket sessions holding a connection", value=stats.open
        )
        for name, help_text, value in (
            ("poolgate_ws_sessions_opened", "WebSocket sessions accepted", stats.opened_total),
            (
                "poolgate_ws_received_bytes",
                "Bytes from WebSocket clients",
                stats.bytes_from_clients,
            ),
            ("poolgate_ws_sent_bytes", "Bytes to WebSocket clients", stats.bytes_to_clients),
            (
                "poolgate_ws_session_seconds",
                "Time spent in WebSocket sessions",
                stats.seconds_total,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        ended = CounterMetricFamily(
            "poolgate_ws_sessions_ended", "WebSocket sessions ended, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(stats.ended.items()):
            ended.add_metric([outcome], count)
        yield ended
