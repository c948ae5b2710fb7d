"""Cached reads in the Worker: statuses surfaced, writes invalidating precisely, so a
client that writes and then reads always sees its write; and the per-request opt-out."""

from __future__ import annotations

from db.client import Cache, Database
from tests.worker.conftest import WorkerClient
from tests.worker.test_posts import create_post
from tests.worker.test_users import create_user


async def test_published_posts_are_cached_and_drafts_are_not(client: WorkerClient) -> None:
    author = await create_user(client)
    post = await create_post(client, author["id"])
    await client.post(f"/posts/{post['id']}/publish")
    first = await client.get("/posts?published=true")
    second = await client.get("/posts?published=true")
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("miss", "ttl")
    assert second.json() == first.json()
    assert "age" in second.headers
    drafts = await client.get("/posts?published=false")
    assert drafts.headers["x-cache-status"] == "none"


async def test_a_client_that_writes_then_reads_sees_its_write(client: WorkerClient) -> None:
    author = await create_user(client)
    post = await create_post(client, author["id"], "first title")
    await client.post(f"/posts/{post['id']}/publish")
    mine = f"/users/{author['id']}/posts"

    async def titles(target: str) -> list[str]:
        return [p["title"] for p in (await client.get(target)).json()["items"]]

    # warm both caches, then prove they are hit
    assert await titles("/posts?published=true") == ["first title"]
    assert await titles(mine) == ["first title"]
    assert (await client.get(mine)).headers["x-cache-status"] == "ttl"

    await client.patch(f"/posts/{post['id']}", {"title": "second title"})
    assert await titles("/posts?published=true") == ["second title"]
    assert await titles(mine) == ["second title"]

    extra = await create_post(client, author["id"], "a draft")
    assert await titles(mine) == ["second title", "a draft"]

    await client.post(f"/posts/{extra['id']}/publish")
    assert await titles("/posts?published=true") == ["second title", "a draft"]

    await client.delete(f"/posts/{post['id']}")
    assert await titles("/posts?published=true") == ["a draft"]
    assert await titles(mine) == ["a draft"]

    await client.delete(f"/users/{author['id']}")
    assert await titles("/posts?published=true") == []
    assert (await client.get(mine)).status == 404


async def test_a_user_created_after_a_cached_404_is_found(client: WorkerClient) -> None:
    assert (await client.get("/users/1/posts")).status == 404
    user = await create_user(client)
    assert user["id"] == 1
    listed = await client.get("/users/1/posts")
    assert listed.status == 200 and listed.json()["items"] == []


async def test_cache_control_no_cache_opts_a_request_out(client: WorkerClient) -> None:
    author = await create_user(client)
    await client.get(f"/users/{author['id']}/posts")
    fresh = await client.get(f"/users/{author['id']}/posts", headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache-status"] == "none"
    assert (await client.get(f"/users/{author['id']}/posts")).headers["x-cache-status"] == "ttl"


async def test_the_client_returns_the_cache_status_alongside_the_rows(database: Database) -> None:
    from db.client import sql

    strategy = Cache(ttl=60, swr=30, tags=("client_test",))
    statement = sql("SELECT $1::text AS marker", "client-cache-status")
    first = await database.run(statement, cache=strategy)
    second = await database.run(statement, cache=strategy)
    assert (first.cache_status, first.age) == ("miss", 0)
    assert second.cache_status == "ttl" and second.age is not None
    assert second.rows == first.rows == [{"marker": "client-cache-status"}]
    await database.invalidate(("client_test",))
    assert (await database.run(statement, cache=strategy)).cache_status == "miss"
    assert (await database.run(statement)).cache_status == "none"
