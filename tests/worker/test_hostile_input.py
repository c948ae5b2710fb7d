"""Hostile and sloppy input gets an honest 4xx JSON answer, and nothing stored breaks a read.

Each test here stands for an item of issue 8 that the Worker got wrong before.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app import Services
from db.client import Database
from db.transport import HttpCall, HttpReply
from routes.table import build_app
from tests.worker.conftest import Reply, WorkerClient, config_for
from web import Request

JSON = {"content-type": "application/json"}


def error_of(reply: Reply) -> dict[str, Any]:
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    error: dict[str, Any] = reply.json()["error"]
    return error


def fields_named(reply: Reply) -> list[str]:
    return [item["field"] for item in error_of(reply)["details"]]


async def make_user(client: WorkerClient, email: str = "a@b.co") -> int:
    reply = await client.post("/users", {"email": email, "name": "A"})
    assert reply.status == 201, reply.body
    user_id: int = reply.json()["id"]
    return user_id


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_json_number_literals_are_malformed_json(
    client: WorkerClient, literal: bytes
) -> None:
    body = b'{"message": "m", "meta": {"x": ' + literal + b"}}"
    reply = await client.request("POST", "/logs", body=body, headers=JSON)
    assert reply.status == 400
    assert error_of(reply)["code"] == "malformed_json"
    assert literal.decode().lstrip("-") in error_of(reply)["message"]


async def test_a_number_too_large_for_a_double_is_refused_naming_its_field(
    client: WorkerClient,
) -> None:
    body = b'{"message": "m", "meta": {"reading": [1, 1e400]}}'
    reply = await client.request("POST", "/logs", body=body, headers=JSON)
    assert reply.status == 422
    assert fields_named(reply) == ["meta.reading.1"]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_a_body_nested_deeper_than_32_levels_is_refused(client: WorkerClient) -> None:
    reply = await client.post("/logs", {"message": "m", "meta": nested(700)})
    assert reply.status == 422
    assert "nests deeper than 32 levels" in json.dumps(error_of(reply)["details"])
    assert (await client.post("/logs", {"message": "m", "meta": nested(30)})).status == 201


async def test_a_stored_row_of_any_depth_reads_back_exactly(
    client: WorkerClient, database: Database
) -> None:
    # deeper than CPython's recursion limit lets it parse, as another writer may store
    text = '{"a": ' * 2000 + "{}" + "}" * 2000
    await database.execute(
        "INSERT INTO logs (level, message, meta) VALUES ('info', 'deep', $1::jsonb)", text
    )
    reply = await client.get("/logs?level=info&limit=200")
    assert reply.status == 200
    assert text.encode() in reply.body  # Python's json cannot parse it back here
    assert (await client.get("/logs")).status == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/users", b'{"email": "x@y.co", "name": "\\ud83d"}'),
        ("/users", b'{"email": "x@y.co", "name": "ok", "\\udc00": 1}'),
        ("/logs", b'{"message": "m", "meta": {"k": ["\\ud83d"]}}'),
        ("/logs", b'{"message": "m", "meta": {"\\ud83d": 1}}'),
    ],
)
async def test_a_lone_surrogate_is_refused_at_the_worker(
    client: WorkerClient, path: str, body: bytes
) -> None:
    reply = await client.request("POST", path, body=body, headers=JSON)
    assert reply.status == 422
    assert "surrogate" in json.dumps(error_of(reply))


async def test_a_surrogate_pair_is_ordinary_text(client: WorkerClient) -> None:
    body = b'{"email": "x@y.co", "name": "\\ud83d\\ude00"}'
    reply = await client.request("POST", "/users", body=body, headers=JSON)
    assert reply.status == 201
    assert reply.json()["name"] == "\U0001f600"


def replying(status: int, body: bytes = b'{"message": "boom"}') -> WorkerClient:
    async def endpoint(call: HttpCall) -> HttpReply:
        return HttpReply(status, {"content-type": "application/json"}, body)

    return WorkerClient(build_app(), Database(config_for("http://endpoint.invalid"), endpoint))


@pytest.mark.parametrize("status", [500, 501, 502])
async def test_an_endpoint_failing_with_a_5xx_other_than_503_is_a_bad_gateway(
    status: int,
) -> None:
    reply = await replying(status).get("/users")
    assert reply.status == 502
    assert error_of(reply)["code"] == "bad_gateway"
    assert "retry-after" not in reply.headers


async def test_an_endpoint_answering_504_means_the_outcome_is_unknown() -> None:
    client = replying(504, b'{"message": "the database did not answer within 16 s"}')
    read = await client.get("/users")
    assert (read.status, read.headers["retry-after"]) == (503, "1")
    write = await client.post("/users", {"email": "a@b.co", "name": "A"})
    assert (write.status, error_of(write)["code"]) == (504, "outcome_unknown")


async def test_an_endpoint_answering_503_is_unavailable_with_retry_after() -> None:
    reply = await replying(503).get("/users")
    assert reply.status == 503
    assert reply.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", "application/json; charset=utf-8", "APPLICATION/JSON;Charset=UTF-8"],
)
async def test_media_types_are_case_insensitive_and_may_carry_parameters(
    client: WorkerClient, content_type: str
) -> None:
    body = json.dumps({"email": "c@d.co", "name": "C"}).encode()
    reply = await client.request(
        "POST", "/users", body=body, headers={"content-type": content_type}
    )
    assert reply.status == 201, reply.body


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=latin-1"])
async def test_other_media_types_are_415(client: WorkerClient, content_type: str) -> None:
    body = json.dumps({"email": "c@d.co", "name": "C"}).encode()
    reply = await client.request(
        "POST", "/users", body=body, headers={"content-type": content_type}
    )
    assert reply.status == 415


@pytest.mark.parametrize("author_id", ["1", True, "1.0", 1.0])
async def test_an_integer_field_takes_only_json_integers(
    client: WorkerClient, author_id: Any
) -> None:
    await make_user(client)
    reply = await client.post("/posts", {"author_id": author_id, "title": "T"})
    assert reply.status == 422
    assert fields_named(reply) == ["author_id"]


@pytest.mark.parametrize("name", [5, True, ["A"]])
async def test_a_string_field_takes_only_json_strings(client: WorkerClient, name: Any) -> None:
    reply = await client.post("/users", {"email": "a@b.co", "name": name})
    assert reply.status == 422
    assert fields_named(reply) == ["name"]


async def test_text_is_stored_as_sent_and_only_the_email_is_normalised(
    client: WorkerClient,
) -> None:
    user = await client.post("/users", {"email": "Ann@Example.COM", "name": "  Ann  "})
    assert (user.json()["email"], user.json()["name"]) == ("ann@example.com", "  Ann  ")
    padded = await client.post("/users", {"email": " bo@example.com", "name": "Bo"})
    assert fields_named(padded) == ["email"]
    post = await client.post(
        "/posts", {"author_id": user.json()["id"], "title": " T ", "body": "\n  code\n"}
    )
    assert (post.json()["title"], post.json()["body"]) == (" T ", "\n  code\n")
    fetched = await client.get(f"/posts/{post.json()['id']}")
    assert fetched.json()["body"] == "\n  code\n"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_a_name_or_title_must_have_a_visible_character(
    client: WorkerClient, blank: str
) -> None:
    assert (await client.post("/users", {"email": "a@b.co", "name": blank})).status == 422
    user_id = await make_user(client)
    assert (await client.post("/posts", {"author_id": user_id, "title": blank})).status == 422


def cursor_of(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of({"after": 10**30}),
        cursor_of({"after": -5}),
        cursor_of({"after": 0}),
        cursor_of({"after": 3, "extra": 1}),
        cursor_of({"after": 3.0}),
        cursor_of([3]),
        "not-a-cursor",
        "%%%",
        base64.urlsafe_b64encode(b'{"after":3}').decode(),  # padded: not what we issue
    ],
)
@pytest.mark.parametrize("path", ["/users", "/posts", "/logs", "/users/1/posts"])
async def test_a_cursor_the_api_did_not_issue_is_400_bad_cursor(
    client: WorkerClient, cursor: str, path: str
) -> None:
    await make_user(client)
    reply = await client.get(f"{path}?cursor={cursor}")
    assert reply.status == 400, reply.body
    assert error_of(reply)["code"] == "bad_cursor"


async def test_an_issued_cursor_still_pages(client: WorkerClient) -> None:
    for n in range(3):
        await make_user(client, f"u{n}@b.co")
    first = (await client.get("/users?limit=2")).json()
    second = (await client.get(f"/users?limit=2&cursor={first['next_cursor']}")).json()
    assert [u["email"] for u in second["items"]] == ["u2@b.co"]


async def test_the_trailing_slash_redirect_keeps_the_query_string_exactly(
    client: WorkerClient,
) -> None:
    reply = await client.get("/users/?tag=a&tag=b&x=%2F&empty=")
    assert reply.status == 308
    assert reply.headers["location"] == "/users?tag=a&tag=b&x=%2F&empty="


async def test_every_id_up_to_the_largest_bigint_reaches_its_handler(
    client: WorkerClient,
) -> None:
    largest = 2**63 - 1
    reply = await client.get(f"/users/{largest}")
    assert reply.status == 404
    assert error_of(reply)["message"] == f"user {largest} does not exist"
    assert (await client.patch(f"/posts/{largest}", {"title": "x"})).status == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_an_id_past_the_largest_bigint_is_no_route(client: WorkerClient, method: str) -> None:
    reply = await client.request(method, f"/users/{2**63}", json_body={"name": "x"})
    assert reply.status == 404
    assert error_of(reply)["message"].startswith("no route")


@pytest.mark.parametrize("path", ["/users%2F1", "/users%2f1", "/users/1%2Fposts"])
async def test_an_encoded_slash_does_not_split_a_path_segment(
    client: WorkerClient, path: str
) -> None:
    await make_user(client)
    reply = await client.get(path)
    assert reply.status == 404


async def test_options_answers_204_with_allow(client: WorkerClient) -> None:
    reply = await client.request("OPTIONS", "/users/1")
    assert reply.status == 204
    assert reply.body == b""
    assert reply.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"
    assert (await client.request("OPTIONS", "/nowhere")).status == 404


async def test_a_cors_preflight_from_any_origin_is_allowed_without_credentials(
    client: WorkerClient,
) -> None:
    reply = await client.request(
        "OPTIONS",
        "/posts",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, idempotency-key",
        },
    )
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == "*"
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "content-type" in reply.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in reply.headers
    simple = await client.get("/users", headers={"origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "x-request-id" in simple.headers["access-control-expose-headers"]


FULLWIDTH_FIVE, ARABIC_INDIC_ONE = "\uff15", "\u0661"


@pytest.mark.parametrize(
    "limit", [FULLWIDTH_FIVE, ARABIC_INDIC_ONE, " 1", "1 ", "+1", "1_0", "0x1"]
)
async def test_a_number_in_the_query_takes_only_ascii_digits(
    client: WorkerClient, limit: str
) -> None:
    reply = await client.get(f"/users?limit={limit}")
    assert reply.status == 400
    assert error_of(reply)["code"] == "bad_request"


async def test_a_long_url_is_414_json() -> None:
    app = build_app()
    request = Request("GET", "/users", query_string="q=" + "x" * 9000)
    response = await app.handle(request, Services(database=None, defer=lambda _: None))
    assert response.status == 414
    assert json.loads(response.body)["error"]["code"] == "uri_too_long"


async def test_head_carries_the_length_get_would_send(client: WorkerClient) -> None:
    get = await client.get("/")
    head = await client.request("HEAD", "/")
    assert head.body == b""
    assert head.headers["content-length"] == str(len(get.body))


async def test_pages_of_huge_posts_stay_under_the_endpoint_limit_and_lose_nothing(
    client: WorkerClient, database: Database
) -> None:
    user_id = await make_user(client)
    # 27 posts of 400 kB each: one page of them would be 10.8 MB, over the endpoint's 10 MiB
    await database.execute(
        "INSERT INTO posts (author_id, title, body)"
        " SELECT $1, 'huge ' || n, repeat($2, 100000) FROM generate_series(1, 27) AS n",
        user_id,
        "\U0001f600",
    )
    for listing in ("/posts", f"/users/{user_id}/posts"):
        seen: list[int] = []
        target = f"{listing}?limit=100"
        while True:
            reply = await client.get(target)
            assert reply.status == 200, reply.body[:300]
            assert len(reply.body) < 8 * 1024 * 1024
            found = reply.json()
            seen += [item["id"] for item in found["items"]]
            if found["next_cursor"] is None:
                break
            target = f"{listing}?limit=100&cursor={found['next_cursor']}"
        assert seen == list(range(1, 28))


@pytest.mark.parametrize("depth", [5_000, 100_000])
async def test_a_body_nested_past_any_stack_is_422_and_the_worker_keeps_serving(
    client: WorkerClient, depth: int
) -> None:
    """Refused before it is parsed: a parser recursing that deep overflows the
    interpreter's stack (in Pyodide, the JavaScript stack: the host died)."""
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        body = opening * depth + closing * depth
        reply = await client.request("POST", "/logs", body=body, headers=JSON)
        assert reply.status == 422, reply.body
        assert "nests deeper than 32 levels" in json.dumps(error_of(reply)["details"])
    assert (await client.get("/")).status == 200
