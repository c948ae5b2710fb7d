"""Every method on every path with odd bodies and parameters: never a 500.

Found by this sweep: a negative id made an invalid cache tag, which the gateway refused
and the Worker then answered with a 500.
"""

from __future__ import annotations

import itertools
import json

from tests.worker.conftest import WorkerClient

BODIES: list[bytes | None] = [
    None,
    b"",
    b"null",
    b"[]",
    b"{}",
    b"1",
    b'"x"',
    b'{"a":',
    b"\xff",
    json.dumps({"email": "x@y.zz", "name": "N", "author_id": 10**30, "title": "t"}).encode(),
    json.dumps({"email": "x@y.zz", "name": "N" * 1000}).encode(),
    json.dumps({"author_id": -1, "title": ""}).encode(),
    json.dumps({"author_id": "abc", "title": None}).encode(),
    json.dumps({"level": "info", "message": "m", "meta": {"a": [1, {"b": None}]}}).encode(),
    json.dumps({"level": "info", "message": "m", "meta": "not an object"}).encode(),
    json.dumps({"title": "x", "body": "y" * 10}).encode(),
]
PATHS = [
    "/",
    "/users",
    "/users/1",
    "/users/999999999999999999",
    "/users/-1",
    "/users/-1/posts",
    "/users/1/posts",
    "/posts",
    "/posts/1",
    "/posts/-1",
    "/posts/1/publish",
    "/logs",
    "/openapi.json",
    "/users?limit=99999999999999999999999",
    "/users?cursor=eyJhZnRlciI6ICJ4In0",  # {"after": "x"}
    "/users?cursor=eyJhZnRlciI6IDk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OX0",  # an id past bigint
    "/logs?level=&limit=",
    "/posts?published=",
    "/%00",
    "/users/1%2F2",
]
METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]


async def test_no_combination_of_method_path_and_body_answers_a_server_error(
    client: WorkerClient,
) -> None:
    await client.post("/users", {"email": "a@b.co", "name": "A"})
    await client.post("/posts", {"author_id": 1, "title": "T"})
    server_errors = []
    for method, path, body in itertools.product(METHODS, PATHS, BODIES):
        reply = await client.request(
            method, path, body=body, headers={"content-type": "application/json"}
        )
        if reply.status >= 500:
            server_errors.append(f"{method} {path} {body!r:.40} -> {reply.status}")
    assert server_errors == []


async def test_a_negative_id_is_a_plain_404(client: WorkerClient) -> None:
    assert (await client.delete("/users/-1")).status == 404
    assert (await client.get("/users/-1/posts")).status == 404
