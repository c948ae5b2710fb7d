"""Idempotency-Key on every write route, and honest answers when a write's outcome is
unknown, against the real gateway and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from db.client import Database
from db.transport import HttpCall, HttpReply, HttpxTransport, TransportFailure
from devstack.postgres import EmbeddedPostgres
from routes.table import build_app
from tests.support.services import APP_DATABASE, Gateway, GatewayFactory
from tests.worker.conftest import Reply, WorkerClient, config_for


def keyed(key: str) -> dict[str, str]:
    return {"idempotency-key": key}


def count(postgres: EmbeddedPostgres, table: str) -> int:
    with postgres.admin(APP_DATABASE) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(str(row[0]))


async def make_user(client: WorkerClient) -> int:
    reply = await client.post("/users", {"email": "a@b.co", "name": "A"})
    user_id: int = reply.json()["id"]
    return user_id


async def test_the_same_key_and_body_replays_the_first_response_without_writing_again(
    client: WorkerClient, postgres: EmbeddedPostgres
) -> None:
    body = {"email": "k@b.co", "name": "K"}
    first = await client.post("/users", body, headers=keyed("create-k"))
    again = await client.post("/users", body, headers=keyed("create-k"))
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert count(postgres, "users") == 1


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/posts", {"author_id": 1, "title": "T"}),
        ("PATCH", "/posts/1", {"title": "Edited"}),
        ("POST", "/posts/1/publish", None),
        ("POST", "/posts/1/transfer", {"to_user_id": 1}),
        ("DELETE", "/posts/1", None),
        ("PATCH", "/users/1", {"name": "B"}),
        ("DELETE", "/users/1", None),
        ("POST", "/logs", {"message": "m", "meta": {"deep": [1, {"x": "y"}]}}),
    ],
)
async def test_every_write_route_replays_its_first_outcome(
    client: WorkerClient, method: str, target: str, body: Any
) -> None:
    await make_user(client)
    await client.post("/posts", {"author_id": 1, "title": "T"})
    first = await client.request(method, target, json_body=body, headers=keyed(target + method))
    again = await client.request(method, target, json_body=body, headers=keyed(target + method))
    assert first.status < 300, first.body
    assert (again.status, again.body) == (first.status, first.body)
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_not_found_outcome_is_replayed_too(client: WorkerClient) -> None:
    first = await client.delete("/posts/77", headers=keyed("gone"))
    again = await client.delete("/posts/77", headers=keyed("gone"))
    assert (first.status, again.status) == (404, 404)
    assert again.headers["idempotent-replayed"] == "true"


async def test_the_same_key_with_another_request_is_422(client: WorkerClient) -> None:
    await client.post("/users", {"email": "a@b.co", "name": "A"}, headers=keyed("k1"))
    other_body = await client.post("/users", {"email": "z@b.co", "name": "Z"}, headers=keyed("k1"))
    other_route = await client.post("/posts", {"author_id": 1, "title": "T"}, headers=keyed("k1"))
    for reply in (other_body, other_route):
        assert reply.status == 422
        assert reply.json()["error"]["code"] == "idempotency_key_reused"


async def test_json_bodies_are_compared_by_value_not_by_spelling(client: WorkerClient) -> None:
    first = await client.request(
        "POST", "/users", body=b'{"email":"s@b.co","name":"S"}', headers=keyed("spelled")
    )
    again = await client.request(
        "POST",
        "/users",
        body=b'{ "name": "S",\n  "email": "s@b.co" }',
        headers={**keyed("spelled"), "content-type": "application/json"},
    )
    assert (first.status, again.status) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"


async def test_the_same_key_while_the_first_request_runs_is_409(
    client: WorkerClient, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin(APP_DATABASE) as running:
        # what the first request holds for as long as its transaction runs
        running.execute("SELECT pg_advisory_lock(hashtextextended('idempotency:busy', 0))")
        reply = await client.post("/users", {"email": "a@b.co", "name": "A"}, headers=keyed("busy"))
    assert reply.status == 409
    assert reply.json()["error"]["code"] == "idempotency_key_in_use"
    assert count(postgres, "users") == 0
    after = await client.post("/users", {"email": "a@b.co", "name": "A"}, headers=keyed("busy"))
    assert after.status == 201


async def test_a_write_that_fails_stores_no_key_and_a_retry_meets_the_same_answer(
    client: WorkerClient, postgres: EmbeddedPostgres
) -> None:
    await client.post("/users", {"email": "taken@b.co", "name": "A"})
    body = {"email": "taken@b.co", "name": "B"}
    first = await client.post("/users", body, headers=keyed("dup"))
    again = await client.post("/users", body, headers=keyed("dup"))
    assert (first.status, again.status) == (409, 409)
    assert "idempotent-replayed" not in again.headers
    assert count(postgres, "idempotency_keys") == 0


async def test_an_expired_key_is_free_again_and_expired_keys_are_cleaned_up(
    client: WorkerClient, postgres: EmbeddedPostgres
) -> None:
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, rows, created_at)"
            " SELECT 'old-' || n, 'f', '[]', now() - interval '25 hours'"
            " FROM generate_series(1, 5) AS n"
        )
    reply = await client.post("/users", {"email": "a@b.co", "name": "A"}, headers=keyed("old-1"))
    assert reply.status == 201 and "idempotent-replayed" not in reply.headers
    with postgres.admin(APP_DATABASE) as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM idempotency_keys")]
    assert keys == ["old-1"]


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
async def test_a_malformed_key_is_400(client: WorkerClient, key: str) -> None:
    reply = await client.post("/users", {"email": "a@b.co", "name": "A"}, headers=keyed(key))
    assert reply.status == 400


class LosesReplies:
    """Delivers each call to the real gateway, then loses the answer the first
    `lose` times: the write happened, the Worker cannot know."""

    def __init__(self, inner: HttpxTransport, lose: int) -> None:
        self.inner = inner
        self.lose = lose

    async def __call__(self, call: HttpCall) -> HttpReply:
        reply = await self.inner(call)
        if self.lose > 0 and call.url.endswith("/sql"):
            self.lose -= 1
            raise TransportFailure("the connection broke after the request was sent")
        return reply


@pytest.fixture
async def lossy(gateway: Gateway, schema: None) -> AsyncIterator[tuple[WorkerClient, LosesReplies]]:
    inner = HttpxTransport()
    transport = LosesReplies(inner, lose=0)
    yield WorkerClient(build_app(), Database(config_for(gateway.url), transport)), transport
    await inner.aclose()


async def test_a_write_whose_answer_was_lost_is_504_outcome_unknown_not_retry_me(
    client: WorkerClient, lossy: tuple[WorkerClient, LosesReplies], postgres: EmbeddedPostgres
) -> None:
    worker, transport = lossy
    transport.lose = 1
    reply = await worker.post("/users", {"email": "a@b.co", "name": "A"})
    assert reply.status == 504
    error = reply.json()["error"]
    assert error["code"] == "outcome_unknown" and "Idempotency-Key" in error["message"]
    assert "retry-after" not in reply.headers
    assert count(postgres, "users") == 1  # it was applied after all


async def test_a_read_whose_answer_was_lost_is_503_retry_after(
    lossy: tuple[WorkerClient, LosesReplies],
) -> None:
    worker, transport = lossy
    transport.lose = 1
    reply = await worker.get("/users")
    assert reply.status == 503 and reply.headers["retry-after"] == "1"


async def test_retrying_a_lost_keyed_write_with_its_key_applies_it_exactly_once(
    client: WorkerClient, lossy: tuple[WorkerClient, LosesReplies], postgres: EmbeddedPostgres
) -> None:
    worker, transport = lossy
    user = await make_user(client)
    transport.lose = 1
    body = {"author_id": user, "title": "Once"}
    lost: Reply = await worker.post("/posts", body, headers=keyed("post-once"))
    assert lost.status == 504
    retried = await worker.post("/posts", body, headers=keyed("post-once"))
    assert retried.status == 201 and retried.headers["idempotent-replayed"] == "true"
    assert retried.json()["title"] == "Once"
    assert count(postgres, "posts") == 1


async def test_a_write_that_surely_never_left_is_503_with_retry_after(
    gateways: GatewayFactory, schema: None
) -> None:
    doomed = gateways()
    doomed.stop()
    transport = HttpxTransport()
    worker = WorkerClient(build_app(), Database(config_for(doomed.url), transport))
    reply = await worker.post("/users", {"email": "a@b.co", "name": "A"})
    await transport.aclose()
    assert reply.status == 503 and reply.headers["retry-after"] == "1"


async def test_the_worker_sends_its_api_key_to_a_keyed_gateway(
    gateways: GatewayFactory, schema: None
) -> None:
    key = "worker-key-0123456789abcdef"
    keyed_gateway = gateways("--api-keys", key)
    transport = HttpxTransport()
    try:
        for api_key, status in ((key, 200), (None, 502)):
            config = replace(config_for(keyed_gateway.url), api_key=api_key)
            worker = WorkerClient(build_app(), Database(config, transport))
            reply = await worker.get("/users")
            assert reply.status == status, reply.body
    finally:
        await transport.aclose()
