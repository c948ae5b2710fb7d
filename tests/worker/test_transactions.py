"""The Worker's interactive transactions: the client (`db.transaction`) against the real
gateway and Postgres, and `POST /posts/{id}/transfer`, which needs one, on both hosts
(the `client` fixture: in-process CPython and the Pyodide host's fetch transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from db.client import Cache, Database, Isolation, sql
from db.errors import QueryError, Retryable, TransactionGone, TransactionsUnsupported
from db.transport import HttpxTransport
from devstack.postgres import EmbeddedPostgres
from routes.posts import MAX_DRAFTS
from tests.support.services import APP_DATABASE, free_port
from tests.worker.conftest import WorkerClient, config_for


def labels(postgres: EmbeddedPostgres) -> list[str]:
    with postgres.admin(APP_DATABASE) as conn:
        rows = conn.execute("SELECT message FROM logs WHERE level = 'debug' ORDER BY id")
        return [str(row[0]) for row in rows.fetchall()]


INSERT = "INSERT INTO logs (level, message) VALUES ('debug', $1)"


async def test_a_clean_block_commits_and_its_reads_see_its_own_writes(
    database: Database, postgres: EmbeddedPostgres
) -> None:
    async with database.transaction() as tx:
        await tx.execute(INSERT, "inside")
        seen = await tx.query("SELECT message FROM logs WHERE level = 'debug'")
        assert seen == [{"message": "inside"}]
        assert labels(postgres) == []  # nobody else sees it before the commit
    assert labels(postgres) == ["inside"]


async def test_a_block_that_raises_is_rolled_back(
    database: Database, postgres: EmbeddedPostgres
) -> None:
    with pytest.raises(LookupError):
        async with database.transaction() as tx:
            await tx.execute(INSERT, "never")
            raise LookupError("decided against it")
    assert labels(postgres) == []


async def test_a_cancelled_block_is_rolled_back(
    database: Database, postgres: EmbeddedPostgres
) -> None:
    entered = asyncio.Event()

    async def block() -> None:
        async with database.transaction() as tx:
            await tx.execute(INSERT, "cancelled")
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.ensure_future(block())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert labels(postgres) == []


async def test_isolation_and_read_only_reach_postgres(database: Database) -> None:
    with pytest.raises(QueryError) as refused:
        async with database.transaction(isolation=Isolation.SERIALIZABLE, read_only=True) as tx:
            shown = await tx.query_one("SHOW transaction_isolation")
            assert shown == {"transaction_isolation": "serializable"}
            await tx.execute(INSERT, "read only")
    assert refused.value.sqlstate == "25006"


async def test_a_block_that_swallows_an_error_cannot_commit(database: Database) -> None:
    """After a statement fails, Postgres has aborted the transaction: committing it
    anyway is refused (25P02), never a silent partial commit."""
    with pytest.raises(QueryError) as refused:
        async with database.transaction() as tx:
            await tx.execute(INSERT, "lost")
            with pytest.raises(QueryError):
                await tx.execute("SELECT 1/0")
    assert refused.value.sqlstate == "25P02"


async def test_invalidate_tags_are_dropped_at_the_commit(database: Database) -> None:
    await database.execute(INSERT, "before")
    read = "SELECT count(*) AS n FROM logs WHERE level = 'debug'"
    cache = Cache(ttl=600, tags=("debug_logs",))
    assert (await database.run(sql(read), cache=cache)).rows == [{"n": 1}]
    async with database.transaction(invalidate=("debug_logs",)) as tx:
        await tx.execute(INSERT, "after")
    fresh = await database.run(sql(read), cache=cache)
    assert (fresh.rows, fresh.cache_status) == ([{"n": 2}], "miss")


SERIALIZATION_FAILURE = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"


async def test_retries_re_run_the_block_after_a_serialization_failure(
    database: Database, postgres: EmbeddedPostgres
) -> None:
    attempts = 0
    async for attempt in database.transaction(retries=2):
        async with attempt as tx:
            attempts += 1
            await tx.execute(INSERT, f"attempt {attempts}")
            if attempts == 1:
                await tx.execute(SERIALIZATION_FAILURE)
    assert attempts == 2
    assert labels(postgres) == ["attempt 2"]  # the first attempt was rolled back


async def test_when_retries_run_out_the_serialization_failure_is_raised(
    database: Database,
) -> None:
    attempts = 0
    with pytest.raises(Retryable):
        async for attempt in database.transaction(retries=1):
            async with attempt as tx:
                attempts += 1
                await tx.execute(SERIALIZATION_FAILURE)
    assert attempts == 2


async def test_retries_without_a_loop_say_how_to_write_it(database: Database) -> None:
    with pytest.raises(TypeError, match=r"async for attempt in db\.transaction"):
        async with database.transaction(retries=2):
            pass


async def test_an_expired_transaction_raises_transaction_gone(database: Database) -> None:
    with pytest.raises(TransactionGone, match="expired"):
        async with database.transaction(timeout=0.3) as tx:
            await tx.execute(INSERT, "too slow")
            # not a bound on anything: waits past the expiry so the next call meets it
            await asyncio.sleep(0.6)
            await tx.execute(INSERT, "too late")


@pytest.fixture
async def neon_like_endpoint() -> AsyncIterator[str]:
    """An HTTP endpoint that, like Neon's, has `/sql` and no `/transaction`."""

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"message": "not found"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_an_endpoint_without_transactions_gets_a_clear_error(
    neon_like_endpoint: str,
) -> None:
    transport = HttpxTransport()
    elsewhere = Database(config_for(neon_like_endpoint), transport)
    with pytest.raises(TransactionsUnsupported, match="interactive transactions need poolgate"):
        async with elsewhere.transaction():
            pass
    await transport.aclose()


# --- POST /posts/{id}/transfer, on both hosts --------------------------------------------


async def users_and_a_post(client: WorkerClient) -> tuple[int, int, int]:
    author = (await client.post("/users", {"email": "a@x.co", "name": "A"})).json()["id"]
    other = (await client.post("/users", {"email": "o@x.co", "name": "O"})).json()["id"]
    post = (await client.post("/posts", {"author_id": author, "title": "P"})).json()["id"]
    return author, other, post


async def test_a_post_moves_to_another_author(client: WorkerClient) -> None:
    author, other, post = await users_and_a_post(client)
    moved = await client.post(f"/posts/{post}/transfer", {"to_user_id": other})
    assert moved.status == 200 and moved.json()["author_id"] == other
    assert (await client.get(f"/posts/{post}")).json()["author_id"] == other
    assert (await client.get(f"/users/{author}/posts")).json()["items"] == []


async def test_a_transfer_to_a_missing_user_or_of_a_missing_post_is_refused(
    client: WorkerClient,
) -> None:
    _, other, post = await users_and_a_post(client)
    missing_user = await client.post(f"/posts/{post}/transfer", {"to_user_id": 9999})
    assert missing_user.status == 422
    assert missing_user.json()["error"]["details"][0]["field"] == "to_user_id"
    missing_post = await client.post("/posts/9999/transfer", {"to_user_id": other})
    assert missing_post.status == 404
    assert (await client.post(f"/posts/{post}/transfer", {"to_user_id": "2"})).status == 422


async def test_a_transfer_to_an_author_with_the_most_drafts_is_409(
    client: WorkerClient,
) -> None:
    _, other, post = await users_and_a_post(client)
    for n in range(MAX_DRAFTS):
        await client.post("/posts", {"author_id": other, "title": f"draft {n}"})
    refused = await client.post(f"/posts/{post}/transfer", {"to_user_id": other})
    assert refused.status == 409
    assert f"at most {MAX_DRAFTS}" in refused.json()["error"]["message"]


async def test_racing_transfers_never_give_an_author_more_than_the_most_drafts(
    client: WorkerClient, postgres: EmbeddedPostgres
) -> None:
    """Write skew: each transfer reads the target's drafts, then writes. Two at once
    under a weaker isolation would both see room for one and both move their post."""
    author = (await client.post("/users", {"email": "a@x.co", "name": "A"})).json()["id"]
    for round_number in range(4):
        target = (
            await client.post("/users", {"email": f"t{round_number}@x.co", "name": "T"})
        ).json()["id"]
        for n in range(MAX_DRAFTS - 1):
            await client.post("/posts", {"author_id": target, "title": f"d{n}"})
        racers = [
            (await client.post("/posts", {"author_id": author, "title": f"r{k}"})).json()["id"]
            for k in range(2)
        ]
        answers = await asyncio.gather(
            *(client.post(f"/posts/{p}/transfer", {"to_user_id": target}) for p in racers)
        )
        assert sorted(a.status for a in answers) == [200, 409]
        with postgres.admin(APP_DATABASE) as conn:
            drafts = conn.execute(
                "SELECT count(*) FROM posts WHERE author_id = %s AND NOT published", [target]
            ).fetchone()
        assert drafts == (MAX_DRAFTS,)


async def test_a_keyed_transfer_is_replayed_not_run_again(client: WorkerClient) -> None:
    _, other, post = await users_and_a_post(client)
    keyed = {"idempotency-key": "transfer-once"}
    first = await client.post(f"/posts/{post}/transfer", {"to_user_id": other}, headers=keyed)
    again = await client.post(f"/posts/{post}/transfer", {"to_user_id": other}, headers=keyed)
    assert (first.status, again.status) == (200, 200)
    assert again.body == first.body and again.headers["idempotent-replayed"] == "true"
    reused = await client.post(f"/posts/{post}/transfer", {"to_user_id": 1}, headers=keyed)
    assert reused.status == 422


async def test_the_transfer_route_is_in_the_openapi_document(client: WorkerClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "post" in paths["/posts/{id}/transfer"]
