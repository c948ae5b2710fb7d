"""When the pooled endpoint is gone, hung or overloaded, the API answers 503 JSON quickly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from db.client import Database
from db.transport import HttpxTransport
from routes.table import build_app
from tests.support.services import GatewayFactory
from tests.worker.conftest import WorkerClient, config_for


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a hung endpoint."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def assert_quick_503(client: WorkerClient, limit_seconds: float) -> None:
    started = time.monotonic()
    reply = await client.get("/users")
    elapsed = time.monotonic() - started
    assert reply.status == 503, reply.body
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.json()["error"]["code"] == "database_unavailable"
    assert elapsed < limit_seconds


async def test_stopped_gateway_gives_503_json_not_a_hang(
    gateways: GatewayFactory, schema: None
) -> None:
    doomed = gateways()
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(doomed.url, timeout=5), transport))
    assert (await client.get("/users")).status == 200
    doomed.stop()
    await assert_quick_503(client, limit_seconds=2)
    health = await client.get("/health")
    assert health.status == 503
    await transport.aclose()


async def test_hung_endpoint_gives_503_after_the_client_timeout(silent_server: str) -> None:
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(silent_server, timeout=0.5), transport))
    await assert_quick_503(client, limit_seconds=3)
    assert "no answer within 0.5 s" in (await client.get("/users")).json()["error"]["message"]
    await transport.aclose()


async def test_database_down_behind_the_gateway_gives_503(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    orphan = gateways(upstream=f"postgresql:///?host={tmp_path_factory.mktemp('none')}&port=5999")
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(orphan.url), transport))
    await assert_quick_503(client, limit_seconds=5)
    await transport.aclose()


async def test_missing_database_url_is_a_clear_500_and_the_index_still_works() -> None:
    client = WorkerClient(build_app(), None)
    assert (await client.get("/")).status == 200
    reply = await client.get("/users")
    assert reply.status == 500
    assert reply.json()["error"]["code"] == "not_configured"
