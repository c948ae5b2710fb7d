"""The Worker's contract where it slipped (issue 19): a whole e-mail address, one value
per query parameter on every host, cursors bound to their listing, the trailing-slash
redirect's query as sent, and at most MAX_DRAFTS drafts a user on every path."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from routes.posts import MAX_DRAFTS
from tests.support.services import WorkerServer, raw_exchange
from tests.worker.conftest import Reply, WorkerClient


def error_of(reply: Reply) -> dict[str, Any]:
    assert reply.headers["content-type"] == "application/json; charset=utf-8", reply
    error: dict[str, Any] = reply.json()["error"]
    return error


async def make_user(client: WorkerClient, email: str) -> int:
    reply = await client.post("/users", {"email": email, "name": "A"})
    assert reply.status == 201, reply.body
    user_id: int = reply.json()["id"]
    return user_id


async def make_drafts(client: WorkerClient, author: int, count: int) -> list[int]:
    ids = []
    for n in range(count):
        reply = await client.post("/posts", {"author_id": author, "title": f"draft {n}"})
        assert reply.status == 201, reply.body
        ids.append(reply.json()["id"])
    return ids


@pytest.mark.parametrize("email", ["ada@example.com\n", "ada@example.com\r\n", "\nada@example.com"])
async def test_an_email_with_a_newline_at_either_end_is_refused_on_create_and_update(
    client: WorkerClient, email: str
) -> None:
    created = await client.post("/users", {"email": email, "name": "Ada"})
    assert created.status == 422, created.body
    assert [item["field"] for item in error_of(created)["details"]] == ["email"]
    user_id = await make_user(client, "ada@example.com")
    patched = await client.patch(f"/users/{user_id}", {"email": email})
    assert patched.status == 422, patched.body
    assert (await client.get(f"/users/{user_id}")).json()["email"] == "ada@example.com"


REPEATED = [
    "/posts?published=true&published=false",
    "/posts?limit=1&limit=2",
    "/users?limit=1&limit=1",
    "/users?cursor=&cursor=",
    "/logs?level=info&level=error",
    "/users/1/posts?limit=1&limit=2",
]


@pytest.mark.parametrize("target", REPEATED)
async def test_a_repeated_query_parameter_is_400_bad_request(
    client: WorkerClient, target: str
) -> None:
    await make_user(client, "a@b.co")
    reply = await client.get(target)
    assert reply.status == 400, reply.body
    assert error_of(reply)["code"] == "bad_request"
    assert "more than once" in error_of(reply)["message"]


@pytest.mark.parametrize("target", REPEATED[:2])
def test_a_repeated_query_parameter_is_400_on_both_local_hosts(
    worker_server: WorkerServer, target: str
) -> None:
    reply = httpx.get(f"{worker_server.url}{target}")
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "bad_request"


async def test_a_parameter_no_route_takes_may_repeat(client: WorkerClient) -> None:
    assert (await client.get("/users?utm=a&utm=b")).status == 200


async def test_a_cursor_only_continues_the_listing_and_filters_that_issued_it(
    client: WorkerClient,
) -> None:
    first, second = await make_user(client, "a@b.co"), await make_user(client, "c@d.co")
    for author in (first, first, second, second):
        await client.post("/posts", {"author_id": author, "title": "t"})
    await client.post("/posts/1/publish")
    await client.post("/posts/2/publish")

    async def cursor(target: str) -> str:
        reply = await client.get(target)
        assert reply.status == 200, reply.body
        found: str = reply.json()["next_cursor"]
        assert found
        return found

    users = await cursor("/users?limit=1")
    published = await cursor("/posts?published=true&limit=1")
    first_posts = await cursor(f"/users/{first}/posts?limit=1")
    await client.post("/logs", {"level": "error", "message": "one"})
    await client.post("/logs", {"level": "error", "message": "two"})
    error_logs = await cursor("/logs?level=error&limit=1")
    elsewhere = [
        f"/posts?cursor={users}",
        f"/users/{first}/posts?cursor={users}",
        f"/logs?cursor={users}",
        f"/posts?published=false&cursor={published}",
        f"/posts?cursor={published}",
        f"/users/{second}/posts?cursor={first_posts}",
        f"/posts?cursor={first_posts}",
        f"/logs?level=info&cursor={error_logs}",
        f"/logs?cursor={error_logs}",
        f"/users?cursor={error_logs}",
    ]
    for target in elsewhere:
        reply = await client.get(target)
        assert reply.status == 400, (target, reply.body)
        assert error_of(reply)["code"] == "bad_cursor", target
    # and each still continues its own listing, with another page size too
    assert (await client.get(f"/users?limit=5&cursor={users}")).json()["items"][0]["id"] == 2
    own = await client.get(f"/posts?published=true&cursor={published}")
    assert [post["id"] for post in own.json()["items"]] == [2]
    theirs = await client.get(f"/users/{first}/posts?cursor={first_posts}")
    assert [post["id"] for post in theirs.json()["items"]] == [2]
    logs = await client.get(f"/logs?level=error&cursor={error_logs}")
    assert [log["message"] for log in logs.json()["items"]] == ["one"]


@pytest.mark.parametrize("query", ['q=a"b<c>', "q=a%22b", "q=%zz&x=1+2", "q='`{}|^"])
def test_the_trailing_slash_redirect_repeats_the_query_exactly_as_sent(
    worker_server: WorkerServer, query: str
) -> None:
    port = worker_server.url.rsplit(":", 1)[1]
    answer = raw_exchange(
        worker_server.url,
        f"GET /users/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    assert head[0].split(" ")[1] == "308", head
    locations = [
        line.split(":", 1)[1].strip() for line in head if line.lower().startswith("location:")
    ]
    assert locations == [f"/users?{query}"]


async def test_a_user_cannot_create_a_sixth_draft(client: WorkerClient) -> None:
    author = await make_user(client, "a@b.co")
    await make_drafts(client, author, MAX_DRAFTS)
    refused = await client.post("/posts", {"author_id": author, "title": "one too many"})
    assert refused.status == 409, refused.body
    assert error_of(refused) | {"request_id": ""} == {
        "code": "conflict",
        "message": f"user {author} already has {MAX_DRAFTS} drafts (at most {MAX_DRAFTS})",
        "details": None,
        "request_id": "",
    }
    await client.post("/posts/1/publish")  # one draft fewer: room for one again
    assert (await client.post("/posts", {"author_id": author, "title": "now"})).status == 201
    listing = (await client.get(f"/users/{author}/posts")).json()["items"]
    assert sum(not post["published"] for post in listing) == MAX_DRAFTS


async def test_a_keyed_sixth_draft_is_refused_and_its_retry_answers_the_same(
    client: WorkerClient,
) -> None:
    author = await make_user(client, "a@b.co")
    await make_drafts(client, author, MAX_DRAFTS)
    key = {"idempotency-key": "sixth-draft"}
    body = {"author_id": author, "title": "one too many"}
    first = await client.post("/posts", body, headers=key)
    again = await client.post("/posts", body, headers=key)
    assert (first.status, again.status) == (409, 409), (first.body, again.body)
    listing = (await client.get(f"/users/{author}/posts")).json()["items"]
    assert len(listing) == MAX_DRAFTS


async def test_concurrent_creates_never_make_more_than_the_allowed_drafts(
    client: WorkerClient,
) -> None:
    """Rounds of four creates at once for an author one draft short of the limit:
    exactly one is made each round, the others are 409."""
    for round_number in range(3):
        author = await make_user(client, f"racer{round_number}@b.co")
        await make_drafts(client, author, MAX_DRAFTS - 1)
        replies = await asyncio.gather(
            *(client.post("/posts", {"author_id": author, "title": f"racer {n}"}) for n in range(4))
        )
        assert sorted(reply.status for reply in replies) == [201, 409, 409, 409], [
            (reply.status, reply.body) for reply in replies
        ]
        listing = (await client.get(f"/users/{author}/posts")).json()["items"]
        assert len(listing) == MAX_DRAFTS


async def test_a_create_racing_a_transfer_never_makes_more_than_the_allowed_drafts(
    client: WorkerClient,
) -> None:
    """A transfer that counts the drafts before a concurrent create commits its own
    must not move a post in after it (without the author lock, about one round in
    four ends with six drafts here)."""
    for round_number in range(8):
        author = await make_user(client, f"target{round_number}@b.co")
        donor = await make_user(client, f"donor{round_number}@b.co")
        await make_drafts(client, author, MAX_DRAFTS - 1)
        (moved,) = await make_drafts(client, donor, 1)
        replies = await asyncio.gather(
            client.post("/posts", {"author_id": author, "title": "new"}),
            client.post(f"/posts/{moved}/transfer", {"to_user_id": author}),
        )
        assert sorted(reply.status for reply in replies) == [200, 409] or sorted(
            reply.status for reply in replies
        ) == [201, 409], [(reply.status, reply.body) for reply in replies]
        listing = (await client.get(f"/users/{author}/posts")).json()["items"]
        assert len(listing) == MAX_DRAFTS
