"""Posts: create, read, update, publish, delete; failures mapped to the right statuses."""

from __future__ import annotations

from typing import Any

from tests.worker.conftest import WorkerClient
from tests.worker.test_users import create_user


async def create_post(client: WorkerClient, author_id: int, title: str = "Hello") -> dict[str, Any]:
    reply = await client.post("/posts", {"author_id": author_id, "title": title, "body": "…"})
    assert reply.status == 201, reply.body
    post: dict[str, Any] = reply.json()
    return post


async def test_new_post_is_a_draft_until_published(client: WorkerClient) -> None:
    author = await create_user(client)
    post = await create_post(client, author["id"])
    assert (post["published"], post["published_at"]) == (False, None)
    published = await client.post(f"/posts/{post['id']}/publish")
    assert published.status == 200
    assert published.json()["published"] is True
    first_time = published.json()["published_at"]
    again = await client.post(f"/posts/{post['id']}/publish")
    assert again.json()["published_at"] == first_time
    assert (await client.post("/posts/9999/publish")).status == 404


async def test_post_for_an_unknown_author_answers_422(client: WorkerClient) -> None:
    reply = await client.post("/posts", {"author_id": 12345, "title": "Orphan"})
    assert reply.status == 422
    assert reply.json()["error"]["details"]["constraint"] == "posts_author_id_fkey"


async def test_post_title_is_validated(client: WorkerClient) -> None:
    author = await create_user(client)
    reply = await client.post("/posts", {"author_id": author["id"], "title": "x" * 201})
    assert reply.status == 422
    assert reply.json()["error"]["details"][0]["field"] == "title"


async def test_list_posts_filters_published_and_pages(client: WorkerClient) -> None:
    author = await create_user(client)
    posts = [await create_post(client, author["id"], f"p{n}") for n in range(4)]
    for post in posts[1:]:
        await client.post(f"/posts/{post['id']}/publish")
    published = (await client.get("/posts?published=true&limit=2")).json()
    assert [p["title"] for p in published["items"]] == ["p1", "p2"]
    rest = await client.get(f"/posts?published=true&limit=2&cursor={published['next_cursor']}")
    assert [p["title"] for p in rest.json()["items"]] == ["p3"]
    drafts = (await client.get("/posts?published=false")).json()
    assert [p["title"] for p in drafts["items"]] == ["p0"]
    assert (await client.get("/posts?published=maybe")).status == 400


async def test_update_and_delete_post(client: WorkerClient) -> None:
    author = await create_user(client)
    post = await create_post(client, author["id"])
    updated = await client.patch(f"/posts/{post['id']}", {"body": "new body"})
    assert updated.status == 200
    assert (updated.json()["title"], updated.json()["body"]) == ("Hello", "new body")
    assert (await client.patch(f"/posts/{post['id']}", {"title": None})).status == 422
    assert (await client.delete(f"/posts/{post['id']}")).json() == {
        "deleted": True,
        "id": post["id"],
    }
    assert (await client.get(f"/posts/{post['id']}")).status == 404
