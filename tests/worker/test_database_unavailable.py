"""When the pooled endpoint is gone, hung or overloaded, the API answers 503 JSON, and
what ended the call is the cause itself (a refused connection, the Worker's own
deadline, the gateway's 503), never an outer timeout: asserted through the message,
not a wall-clock bound."""

from __future__ import annotations

import socket
import threading
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


async def answer_503(client: WorkerClient) -> str:
    """The 503 JSON answer to a read, and its message (which says what ended the call:
    a refused connection, the Worker's own deadline, the gateway's answer)."""
    reply = await client.get("/users")
    assert reply.status == 503, reply.body
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    error = reply.json()["error"]
    assert error["code"] == "database_unavailable"
    message: str = error["message"]
    return message


async def test_stopped_gateway_gives_503_json_not_a_hang(
    gateways: GatewayFactory, schema: None
) -> None:
    doomed = gateways()
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(doomed.url, timeout=5), transport))
    assert (await client.get("/users")).status == 200
    doomed.stop()
    # the refused connection ended the call, not the 5 s deadline: no waiting
    message = await answer_503(client)
    assert "could not connect" in message and "no answer within" not in message
    health = await client.get("/health")
    assert health.status == 503
    await transport.aclose()


async def test_hung_endpoint_gives_503_after_the_client_timeout(silent_server: str) -> None:
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(silent_server, timeout=0.5), transport))
    # the Worker's own 0.5 s deadline ended the call (the endpoint never answers)
    assert "no answer within 0.5 s" in await answer_503(client)
    await transport.aclose()


async def test_database_down_behind_the_gateway_gives_503(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    orphan = gateways(upstream=f"postgresql:///?host={tmp_path_factory.mktemp('none')}&port=5999")
    transport = HttpxTransport()
    client = WorkerClient(build_app(), Database(config_for(orphan.url), transport))
    # the gateway answered that it cannot reach Postgres; the Worker did not wait it out
    message = await answer_503(client)
    assert message.endswith("the database endpoint answered 503"), message
    await transport.aclose()


async def test_missing_database_url_is_a_clear_500_and_the_index_still_works() -> None:
    client = WorkerClient(build_app(), None)
    assert (await client.get("/")).status == 200
    reply = await client.get("/users")
    assert reply.status == 500
    assert reply.json()["error"]["code"] == "not_configured"
