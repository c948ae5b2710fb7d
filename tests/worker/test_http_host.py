"""The CPython host over real HTTP: what reaches the app is what the client sent, and
every answer, even to a request aiohttp cannot parse, is the app's JSON."""

from __future__ import annotations

import httpx
import pytest

from tests.support.services import WorkerServer, raw_exchange

JSON_TYPE = "application/json; charset=utf-8"


def assert_json_error(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == JSON_TYPE
    assert reply.json()["error"]["code"] == code


def test_an_encoded_slash_does_not_split_a_segment(worker_server: WorkerServer) -> None:
    created = httpx.post(f"{worker_server.url}/users", json={"email": "a@b.co", "name": "A"})
    assert created.status_code == 201
    assert httpx.get(f"{worker_server.url}/users/1").status_code == 200
    assert_json_error(httpx.get(f"{worker_server.url}/users%2F1"), 404, "not_found")
    assert_json_error(httpx.get(f"{worker_server.url}/users%2f1"), 404, "not_found")


def test_head_carries_the_content_length_of_get(worker_server: WorkerServer) -> None:
    get = httpx.get(f"{worker_server.url}/")
    head = httpx.head(f"{worker_server.url}/")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["content-type"] == JSON_TYPE


@pytest.mark.parametrize("size", [8 * 1024, 60 * 1024])
def test_a_url_over_8_kib_is_414_json(worker_server: WorkerServer, size: int) -> None:
    assert_json_error(httpx.get(f"{worker_server.url}/users?q={'x' * size}"), 414, "uri_too_long")


def test_headers_over_32_kib_are_431_json(worker_server: WorkerServer) -> None:
    reply = httpx.get(f"{worker_server.url}/users", headers={"x-big": "y" * 40_000})
    assert_json_error(reply, 431, "headers_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["malformed-header", "bad-content-length", "nul-in-path", "not-http"],
)
def test_what_the_parser_refuses_is_still_answered_with_json(
    worker_server: WorkerServer, request_bytes: bytes
) -> None:
    answer = raw_exchange(worker_server.url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert b"content-type: application/json" in head.lower()
    assert b'"code":"bad_request"' in body


@pytest.mark.parametrize("method", ["PROPFIND", "QUERY", "TRACE"])
def test_a_method_no_route_has_is_a_json_405(worker_server: WorkerServer, method: str) -> None:
    reply = httpx.request(method, f"{worker_server.url}/users")
    assert_json_error(reply, 405, "method_not_allowed")
    assert "GET" in reply.headers["allow"]


def test_the_pyodide_host_runs_the_sdks_start_up_hooks_as_workerd_does(
    settled_pyodide_host: WorkerServer,
) -> None:
    """python_modules/ added with site.addsitedir, so the SDK's .pth runs its hooks: the
    pydantic_core patch builds a SchemaValidator at import, as in workerd."""
    log = settled_pyodide_host.log_path.read_text()
    assert "the SDK's start-up patches ran for: pydantic_core" in log


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/users/" + "9" * 8200, 414, "uri_too_long"),  # past 8 KiB of path
        ("/users/" + "9" * 5000, 404, "not_found"),  # past Python's int-string limit
        ("/users/" + "9" * 5000 + "/posts", 404, "not_found"),
        ("/" + "x" * 300, 404, "not_found"),  # a segment longer than a file name may be
        ("/docs/" + "x" * 300, 404, "not_found"),
    ],
    ids=["8200-digits", "5000-digits", "5000-digits-posts", "long-segment", "long-asset-name"],
)
def test_a_very_long_path_segment_is_a_json_4xx(
    worker_server: WorkerServer, path: str, status: int, code: str
) -> None:
    assert_json_error(httpx.get(f"{worker_server.url}{path}"), status, code)


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "QUERY"])
@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/users", "GET, HEAD, OPTIONS, POST"),
        ("/users/1", "DELETE, GET, HEAD, OPTIONS, PATCH"),
        ("/posts/1/transfer", "OPTIONS, POST"),
    ],
)
def test_a_method_no_route_has_lists_the_routes_own_methods(
    worker_server: WorkerServer, method: str, path: str, allowed: str
) -> None:
    reply = httpx.request(method, f"{worker_server.url}{path}")
    assert_json_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == allowed
