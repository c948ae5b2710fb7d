"""Users: every handler's success and failure paths, through the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.worker.conftest import WorkerClient


async def create_user(
    client: WorkerClient, email: str = "ada@example.com", name: str = "Ada"
) -> dict[str, Any]:
    reply = await client.post("/users", {"email": email, "name": name})
    assert reply.status == 201, reply.body
    user: dict[str, Any] = reply.json()
    return user


async def test_create_user_answers_201_with_the_row_and_its_location(client: WorkerClient) -> None:
    reply = await client.post("/users", {"email": "Ada@Example.COM", "name": "Ada"})
    assert reply.status == 201
    user = reply.json()
    assert user["email"] == "ada@example.com" and user["name"] == "Ada"
    assert reply.headers["location"] == f"/users/{user['id']}"
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert datetime.fromisoformat(user["created_at"]).tzinfo is not None


async def test_duplicate_email_answers_409_naming_the_constraint(client: WorkerClient) -> None:
    await create_user(client)
    reply = await client.post("/users", {"email": "ADA@example.com", "name": "Other"})
    assert reply.status == 409
    error = reply.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"]["constraint"] == "users_email_key"
    assert error["request_id"] == reply.headers["x-request-id"]


async def test_invalid_fields_answer_422_with_one_entry_per_field(client: WorkerClient) -> None:
    reply = await client.post("/users", {"email": "not-an-email", "name": "", "extra": 1})
    assert reply.status == 422
    error = reply.json()["error"]
    assert error["code"] == "validation_failed"
    assert sorted(item["field"] for item in error["details"]) == ["email", "extra", "name"]


async def test_malformed_json_answers_400(client: WorkerClient) -> None:
    for body in (b'{"email": ', b"\xff\xfe"):
        reply = await client.request(
            "POST", "/users", body=body, headers={"content-type": "application/json"}
        )
        assert reply.status == 400, body[:10]
        assert reply.json()["error"]["code"] == "malformed_json"


async def test_json_nested_past_any_parser_is_422_on_every_interpreter(
    client: WorkerClient,
) -> None:
    """CPython 3.11 cannot parse this nesting, Pyodide's 3.14 can: the depth rule
    answers the same either way."""
    body = b"[" * 5000 + b"]" * 5000
    reply = await client.request(
        "POST", "/users", body=body, headers={"content-type": "application/json"}
    )
    assert reply.status == 422 and reply.json()["error"]["code"] == "validation_failed"


async def test_a_body_that_is_not_json_answers_415(client: WorkerClient) -> None:
    reply = await client.request(
        "POST",
        "/users",
        body=b"email=a",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 415


async def test_oversized_body_answers_413(client: WorkerClient) -> None:
    big = await client.request(
        "POST",
        "/users",
        body=b"x" * (1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert big.status == 413 and big.json()["error"]["code"] == "payload_too_large"
    refused_unread = await client.request("POST", "/users", body_too_large=True)
    assert refused_unread.status == 413


async def test_get_user_answers_the_row_or_404(client: WorkerClient) -> None:
    user = await create_user(client)
    found = await client.get(f"/users/{user['id']}")
    assert found.status == 200 and found.json() == user
    missing = await client.get("/users/999999")
    assert missing.status == 404
    assert missing.json()["error"]["message"] == "user 999999 does not exist"


async def test_list_users_pages_by_keyset_until_the_last_page(client: WorkerClient) -> None:
    ids = [(await create_user(client, f"u{n}@example.com", f"U{n}"))["id"] for n in range(5)]
    first = (await client.get("/users?limit=2")).json()
    assert [u["id"] for u in first["items"]] == ids[:2]
    second = (await client.get(f"/users?limit=2&cursor={first['next_cursor']}")).json()
    assert [u["id"] for u in second["items"]] == ids[2:4]
    last = (await client.get(f"/users?limit=2&cursor={second['next_cursor']}")).json()
    assert [u["id"] for u in last["items"]] == ids[4:]
    assert last["next_cursor"] is None


async def test_bad_paging_parameters_answer_400(client: WorkerClient) -> None:
    for target, code in (
        ("/users?limit=0", "bad_request"),
        ("/users?limit=101", "bad_request"),
        ("/users?limit=ten", "bad_request"),
        ("/users?cursor=garbage!", "bad_cursor"),
        ("/users?cursor=e30", "bad_cursor"),
    ):
        reply = await client.get(target)
        assert reply.status == 400, target
        assert reply.json()["error"]["code"] == code


async def test_partial_update_changes_only_the_given_fields(client: WorkerClient) -> None:
    user = await create_user(client)
    reply = await client.patch(f"/users/{user['id']}", {"name": "Ada L."})
    assert reply.status == 200
    updated = reply.json()
    assert (updated["name"], updated["email"]) == ("Ada L.", user["email"])
    assert updated["updated_at"] > user["updated_at"]
    unchanged = await client.patch(f"/users/{user['id']}", {})
    assert unchanged.json()["updated_at"] == updated["updated_at"]


async def test_update_refuses_null_conflicts_and_missing_rows(client: WorkerClient) -> None:
    user = await create_user(client)
    other = await create_user(client, "bob@example.com", "Bob")
    assert (await client.patch(f"/users/{user['id']}", {"name": None})).status == 422
    taken = await client.patch(f"/users/{other['id']}", {"email": user["email"]})
    assert taken.status == 409
    assert (await client.patch("/users/424242", {"name": "X"})).status == 404


async def test_delete_user_removes_them_and_their_posts(client: WorkerClient) -> None:
    user = await create_user(client)
    await client.post("/posts", {"author_id": user["id"], "title": "Hello"})
    reply = await client.delete(f"/users/{user['id']}")
    assert reply.status == 200 and reply.json() == {"deleted": True, "id": user["id"]}
    assert (await client.get(f"/users/{user['id']}")).status == 404
    assert (await client.get("/posts")).json()["items"] == []
    assert (await client.delete(f"/users/{user['id']}")).status == 404


async def test_user_posts_lists_only_theirs_and_404s_for_an_unknown_user(
    client: WorkerClient,
) -> None:
    ada = await create_user(client)
    bob = await create_user(client, "bob@example.com", "Bob")
    for title in ("one", "two"):
        await client.post("/posts", {"author_id": ada["id"], "title": title})
    await client.post("/posts", {"author_id": bob["id"], "title": "bob's"})
    posts = (await client.get(f"/users/{ada['id']}/posts")).json()["items"]
    assert [p["title"] for p in posts] == ["one", "two"]
    assert (await client.get("/users/999/posts")).status == 404


async def test_a_value_postgres_cannot_store_answers_422(client: WorkerClient) -> None:
    reply = await client.post("/users", {"email": "nul@example.com", "name": "a\u0000b"})
    assert reply.status == 422
    assert reply.json()["error"]["code"] == "validation_failed"
