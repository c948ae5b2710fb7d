"""WebSocket sessions at their edges: what happens to the pooled connection when a
session ends cleanly, drops mid-transaction, idles, floods or outlives the gateway, and
who may open one. Neon's own driver is in test_neon_websocket.py; these need a client
that misbehaves on purpose (tests/support/pg_websocket.py)."""

from __future__ import annotations

import asyncio
import signal
import struct
from collections.abc import AsyncIterator, Callable

import aiohttp
import psutil
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_neon_websocket import run_websocket_client
from tests.support.certificates import Certificates
from tests.support.pg_websocket import WebSocketPostgres, query_message
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    ConnectionSampler,
    Gateway,
    GatewayFactory,
)

KEY = "websocket-test-key-0123456789"


def ws_url(gateway: Gateway, query: str = "") -> str:
    return gateway.url.replace("http", "ws", 1) + "/v2" + query


@pytest.fixture
async def sessions() -> AsyncIterator[list[WebSocketPostgres]]:
    opened: list[WebSocketPostgres] = []
    yield opened
    for session in opened:
        await session.close()


async def open_session(
    opened: list[WebSocketPostgres], gateway: Gateway, password: str = APP_PASSWORD
) -> WebSocketPostgres:
    session = WebSocketPostgres(ws_url(gateway), APP_USER, password, APP_DATABASE)
    opened.append(session)
    reply = await session.connect()
    assert reply.status() == b"I", reply.messages
    return session


def app_backends(postgres: EmbeddedPostgres, state: str | None = None) -> list[tuple[object, ...]]:
    with postgres.admin(APP_DATABASE) as conn:
        rows = conn.execute(
            "SELECT pid, state, wait_event FROM pg_stat_activity WHERE usename = %s"
            " AND (%s::text IS NULL OR state = %s)",
            (APP_USER, state, state),
        ).fetchall()
    return [tuple(row) for row in rows]


async def until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Waits for an effect; the bound is only there so a broken build fails, not hangs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def one_connection(gateways: GatewayFactory) -> Gateway:
    return gateways("--pool-size", "1", "--workers", "1", "--ws-idle-timeout", "3")


async def test_a_clean_session_gives_its_connection_back_reset(
    one_connection: Gateway, sessions: list[WebSocketPostgres]
) -> None:
    first = await open_session(sessions, one_connection)
    pid = (await first.query("SELECT pg_backend_pid()")).messages
    await first.query("SET search_path = nowhere")
    await first.send(b"X\0\0\0\x04")  # Terminate: the session ends, the connection stays
    await first.close()
    second = await open_session(sessions, one_connection)  # the pool's only connection
    assert (await second.query("SELECT pg_backend_pid()")).messages == pid
    shown = await second.query("SHOW search_path")
    assert b"nowhere" not in b"".join(body for _, body in shown.messages)


async def test_the_greeting_reports_the_clients_start_up_settings_then_they_are_reset(
    one_connection: Gateway, sessions: list[WebSocketPostgres]
) -> None:
    settings = {"application_name": "greeted", "options": "-c TimeZone=Asia/Tokyo"}
    first = WebSocketPostgres(
        ws_url(one_connection), APP_USER, APP_PASSWORD, APP_DATABASE, settings
    )
    sessions.append(first)
    greeting = await first.connect()
    reported = greeting.parameter_status()
    assert reported["application_name"] == "greeted" and reported["TimeZone"] == "Asia/Tokyo"
    assert reported["server_encoding"] == "UTF8" and "server_version" in reported
    await first.close()
    second = await open_session(sessions, one_connection)  # the same pooled connection
    shown = await second.query("SHOW TimeZone")
    assert b"Asia/Tokyo" not in b"".join(body for _, body in shown.messages)


async def test_a_start_up_setting_postgres_refuses_ends_the_session_with_its_error(
    one_connection: Gateway, sessions: list[WebSocketPostgres]
) -> None:
    refused = WebSocketPostgres(
        ws_url(one_connection), APP_USER, APP_PASSWORD, APP_DATABASE, {"options": "-c nosuch=1"}
    )
    sessions.append(refused)
    ended = await refused.connect()
    assert [error["C"] for error in ended.errors()] == ["42704"] and ended.closed
    after = await open_session(sessions, one_connection)  # its connection was given back
    assert (await after.query("SELECT 1")).status() == b"I"


async def test_a_session_dropped_mid_transaction_is_rolled_back_not_reused_dirty(
    one_connection: Gateway, postgres: EmbeddedPostgres, sessions: list[WebSocketPostgres]
) -> None:
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("DROP TABLE IF EXISTS ws_dropped")
        conn.execute("CREATE TABLE ws_dropped (n int)")
        conn.execute("GRANT ALL ON ws_dropped TO app")
    first = await open_session(sessions, one_connection)
    await first.query("BEGIN")
    assert (await first.query("INSERT INTO ws_dropped VALUES (1)")).status() == b"T"
    assert first.ws is not None
    first.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await until(lambda: not app_backends(postgres, "idle in transaction"), "rolled back")
    second = await open_session(sessions, one_connection)
    counted = await second.query("SELECT count(*) FROM ws_dropped")
    assert counted.status() == b"I" and counted.data_rows() == 1
    assert b"\x00\x00\x00\x010" in b"".join(body for kind, body in counted.messages)
    with postgres.admin(APP_DATABASE) as conn:
        assert conn.execute("SELECT count(*) FROM ws_dropped").fetchone() == (0,)


async def test_an_idle_session_is_ended_with_57P05_and_its_connection_returned(
    one_connection: Gateway, sessions: list[WebSocketPostgres]
) -> None:
    idle = await open_session(sessions, one_connection)
    ended = await idle.read_reply()  # nothing sent: the gateway ends it (--ws-idle-timeout 3)
    assert [error["C"] for error in ended.errors()] == ["57P05"] and ended.closed
    after = await open_session(sessions, one_connection)  # the only connection is free again
    assert (await after.query("SELECT 1")).status() == b"I"


async def test_a_message_over_the_limit_ends_the_session_before_it_is_read(
    gateways: GatewayFactory, sessions: list[WebSocketPostgres]
) -> None:
    gateway = gateways("--workers", "1", "--max-request-bytes", "1048576")
    session = await open_session(sessions, gateway)
    await session.send(b"Q" + struct.pack("!I", 64 * 1024 * 1024) + b"SELECT")
    refused = await session.read_reply()
    assert [error["C"] for error in refused.errors()] == ["54000"] and refused.closed


async def test_a_client_that_does_not_read_stops_the_server_not_the_gateways_memory(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, sessions: list[WebSocketPostgres]
) -> None:
    gateway = gateways("--workers", "1", "--pool-size", "2")
    process = psutil.Process(gateway.process.pid)
    worker = (process.children() or [process])[0]  # one worker: no supervisor
    session = await open_session(sessions, gateway)
    before = worker.memory_info().rss
    # about 100 MB of rows, and the client reads none of it for now
    await session.send(query_message("SELECT repeat('x', 1048576) FROM generate_series(1, 100)"))
    await until(
        lambda: any(event == "ClientWrite" for _, _, event in app_backends(postgres, "active")),
        "Postgres blocked writing to the gateway",
    )
    grown = worker.memory_info().rss - before
    assert grown < 40 * 1024 * 1024, f"the gateway buffered {grown / 2**20:.0f} MiB"
    result = await session.read_reply()
    assert result.data_rows() == 100 and result.status() == b"I"


async def test_text_frames_are_refused_as_a_protocol_violation(
    one_connection: Gateway, sessions: list[WebSocketPostgres]
) -> None:
    session = await open_session(sessions, one_connection)
    assert session.ws is not None
    await session.ws.send_str("SELECT 1")
    refused = await session.read_reply()
    assert [error["C"] for error in refused.errors()] == ["08P01"] and refused.closed


async def test_a_gateway_stopping_ends_its_sessions_with_57P01(
    gateways: GatewayFactory, sessions: list[WebSocketPostgres]
) -> None:
    gateway = gateways("--workers", "1")
    session = await open_session(sessions, gateway)
    gateway.process.send_signal(signal.SIGTERM)
    ended = await session.read_reply()
    assert [error["C"] for error in ended.errors()] == ["57P01"] and ended.closed
    assert gateway.process.wait(timeout=60) == 0


async def test_with_api_keys_a_session_needs_the_key_in_its_url(
    gateways: GatewayFactory, sessions: list[WebSocketPostgres]
) -> None:
    gateway = gateways("--workers", "1", "--api-keys", KEY)
    for query in ("", "?api_key=not-the-key-0123456789"):
        refused = WebSocketPostgres(ws_url(gateway, query), APP_USER, APP_PASSWORD, APP_DATABASE)
        sessions.append(refused)
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await refused.open()
        assert raised.value.status == 401
    allowed = WebSocketPostgres(
        ws_url(gateway, f"?api_key={KEY}"), APP_USER, APP_PASSWORD, APP_DATABASE
    )
    sessions.append(allowed)
    assert (await allowed.connect()).status() == b"I"


def test_neons_driver_runs_its_sessions_over_tls_with_the_key(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    certificates = Certificates(tmp_path_factory.mktemp("ws-tls"))
    gateway = gateways(
        *("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)),
        *("--api-keys", KEY, "--workers", "1", "--pool-size", "4"),
        ca_file=str(certificates.ca_file),
    )
    output = run_websocket_client(
        gateway, apiKey=KEY, env={"NODE_EXTRA_CA_CERTS": str(certificates.ca_file)}
    )
    assert output["client"]["afterCommitAndRollback"] == [1, 2]
    assert output["pipeline_password"] == [{"one": 1, "word": "text"}]


async def test_http_requests_transactions_and_sessions_share_one_bound_and_each_gets_its_turn(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    role, password = "mixed_user", "pw-mixed_user"
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    url = f"postgresql://{role}:{password}@db.invalid/{APP_DATABASE}"
    # two workers share --pool-size 4: each holds at most 2 of the role's connections
    gateway = gateways("--pool-size", "4", "--acquire-timeout", "30")
    headers = {"Neon-Connection-String": url}
    done: dict[str, int] = {"sql": 0, "transaction": 0, "session": 0}
    statuses: set[int] = set()
    failures: list[str] = []

    async def sql_requests(http: aiohttp.ClientSession) -> None:
        for _ in range(15):
            body = {"query": "SELECT pg_sleep(0.02)"}
            async with http.post(f"{gateway.url}/sql", json=body, headers=headers) as reply:
                statuses.add(reply.status)
                if reply.status != 200:
                    failures.append(await reply.text())
                done["sql"] += reply.status == 200

    async def transactions(http: aiohttp.ClientSession) -> None:
        for _ in range(8):
            async with http.post(f"{gateway.url}/transaction", json={}, headers=headers) as begun:
                statuses.add(begun.status)
                if begun.status != 201:
                    failures.append(await begun.text())
                    continue
                opened = (await begun.json())["id"]
            inside = {**headers, "Poolgate-Transaction": opened}
            body = {"query": "SELECT pg_sleep(0.02)"}
            async with http.post(f"{gateway.url}/sql", json=body, headers=inside) as ran:
                statuses.add(ran.status)
                if ran.status != 200:
                    failures.append(await ran.text())
            async with http.post(
                f"{gateway.url}/transaction/{opened}/commit", headers=headers
            ) as committed:
                statuses.add(committed.status)
                done["transaction"] += committed.status == 200

    async def sessions_one_after_another() -> None:
        for _ in range(8):
            session = WebSocketPostgres(ws_url(gateway), role, password, APP_DATABASE)
            try:
                greeting = await session.connect()
                if greeting.status() != b"I":
                    failures.append(str(greeting.errors()))
                    continue
                steps = [await session.query(sql) for sql in ("BEGIN", "SELECT pg_sleep(0.02)")]
                steps.append(await session.query("COMMIT"))
                if [step.status() for step in steps] != [b"T", b"T", b"I"]:
                    failures.append(str([(step.kinds(), step.errors()) for step in steps]))
                    continue
                done["session"] += 1
            finally:
                await session.close()

    async with aiohttp.ClientSession() as http:
        with ConnectionSampler(postgres, role) as sampler:
            await asyncio.gather(
                *(sql_requests(http) for _ in range(3)),
                *(transactions(http) for _ in range(2)),
                *(sessions_one_after_another() for _ in range(3)),
            )
    assert sampler.highest <= 4
    # each waited its turn within --acquire-timeout
    assert statuses <= {200, 201} and not failures, (statuses, failures)
    assert done == {"sql": 45, "transaction": 16, "session": 24}


async def test_a_start_up_that_never_completes_ends_with_an_error_not_silence(
    gateways: GatewayFactory, sessions: list[WebSocketPostgres]
) -> None:
    gateway = gateways("--workers", "1", "--connect-timeout", "1")
    short = WebSocketPostgres(ws_url(gateway), APP_USER, APP_PASSWORD, APP_DATABASE)
    sessions.append(short)
    await short.open()
    await short.send(struct.pack("!I", 3))  # a length no start-up packet can have
    refused = await short.read_reply()
    assert [error["C"] for error in refused.errors()] == ["08P01"] and refused.closed
    stalled = WebSocketPostgres(ws_url(gateway), APP_USER, APP_PASSWORD, APP_DATABASE)
    sessions.append(stalled)
    await stalled.open()
    await stalled.send(b"")  # an empty frame, then nothing: the log-in times out
    ended = await stalled.read_reply()
    assert [error["C"] for error in ended.errors()] == ["08P01"] and ended.closed
