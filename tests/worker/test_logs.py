"""Logs: every request writes one (in batches); clients read them newest first and add
their own."""

from __future__ import annotations

import asyncio
import uuid

from db.client import Database
from db.transport import HttpCall, HttpReply, HttpxTransport
from request_log import RequestLog
from tests.support.services import Gateway
from tests.worker.conftest import WorkerClient, config_for


async def test_every_request_writes_a_log_row_with_status_and_request_id(
    client: WorkerClient,
) -> None:
    ok = await client.get("/users")
    missing = await client.get("/users/404404")
    logs = (await client.get("/logs?limit=10")).json()["items"]
    # newest first: the two requests above, in reverse order (the listing's own row comes later)
    assert [(log["level"], log["message"]) for log in logs] == [
        ("warning", "GET /users/404404 404"),
        ("info", "GET /users 200"),
    ]
    assert logs[0]["meta"]["request_id"] == missing.headers["x-request-id"]
    assert logs[1]["meta"]["request_id"] == ok.headers["x-request-id"]
    assert logs[1]["meta"]["status"] == 200 and logs[1]["meta"]["duration_ms"] > 0


async def test_post_logs_adds_an_entry_and_level_filters_the_listing(client: WorkerClient) -> None:
    created = await client.post(
        "/logs",
        {"level": "error", "message": "disk on fire", "meta": {"disk": "sda", "temp": 93.5}},
    )
    assert created.status == 201
    assert created.json()["meta"] == {"disk": "sda", "temp": 93.5}
    errors = (await client.get("/logs?level=error")).json()["items"]
    assert [log["message"] for log in errors] == ["disk on fire"]


async def test_logs_limit_is_bounded_and_level_is_checked(client: WorkerClient) -> None:
    assert (await client.get("/logs?limit=201")).status == 400
    assert (await client.get("/logs?level=fatal")).status == 400
    assert (await client.post("/logs", {"level": "fatal", "message": "x"})).status == 422


async def test_logs_page_backwards_through_older_entries(client: WorkerClient) -> None:
    for n in range(3):
        await client.post("/logs", {"message": f"entry {n}", "level": "debug"})
    first = (await client.get("/logs?level=debug&limit=2")).json()
    assert [log["message"] for log in first["items"]] == ["entry 2", "entry 1"]
    rest = (await client.get(f"/logs?level=debug&limit=2&cursor={first['next_cursor']}")).json()
    assert [log["message"] for log in rest["items"]] == ["entry 0"]
    assert rest["next_cursor"] is None


class CountingTransport:
    """The real transport, counting the calls that reach the endpoint."""

    def __init__(self, inner: HttpxTransport) -> None:
        self.inner = inner
        self.calls = 0

    async def __call__(self, call: HttpCall) -> HttpReply:
        self.calls += 1
        return await self.inner(call)


async def test_log_rows_of_concurrent_requests_share_inserts_and_all_land(
    gateway: Gateway, database: Database
) -> None:
    transport = CountingTransport(HttpxTransport())
    batched = RequestLog(Database(config_for(gateway.url), transport))
    marker = f"batch-{uuid.uuid4()}"
    await asyncio.gather(
        *(batched.write("info", marker, {"n": n, "path": "/ünïcode"}) for n in range(60))
    )
    await transport.inner.aclose()
    rows = await database.query(
        "SELECT (meta->>'n')::int AS n, meta->>'path' AS path FROM logs WHERE message = $1"
        " ORDER BY id",
        marker,
    )
    assert [row["n"] for row in rows] == list(range(60))  # every row, in arrival order
    assert {row["path"] for row in rows} == {"/ünïcode"}
    assert transport.calls == 2  # the first row alone, then the 59 that came meanwhile


async def test_a_batch_whose_writer_is_cancelled_never_leaves_the_others_waiting(
    gateway: Gateway, database: Database
) -> None:
    transport = CountingTransport(HttpxTransport())
    batched = RequestLog(Database(config_for(gateway.url), transport))
    first = asyncio.ensure_future(batched.write("info", "first", {}))
    leader = asyncio.ensure_future(batched.write("info", "leader", {}))  # waits for first
    follower = asyncio.ensure_future(batched.write("info", "follower", {}))
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.wait_for(asyncio.gather(first, follower), 10)
    await transport.inner.aclose()
