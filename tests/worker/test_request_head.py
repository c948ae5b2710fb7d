"""What the local hosts make of a request's head, sent as raw bytes over a socket (no
client tidies it): every header reaches the Worker or the request is refused with 431
before any is dropped; the URL comes from the request target, never from `Host`; an
invalid `Host` is a 400 JSON answer, as workerd gives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.services import WorkerServer, raw_exchange

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(server: WorkerServer, head: str, body: bytes = b"") -> RawReply:
    """`head` is the request line and header lines, without the blank line; the
    connection is closed after the answer."""
    if "\r\nconnection:" not in head.lower():
        head += "\r\nConnection: close"
    answer = raw_exchange(server.url, head.encode("latin-1") + b"\r\n\r\n" + body)
    status_head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = status_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        payload = dechunked(payload)
    return RawReply(int(status_line.split(" ")[1]), headers, payload)


def dechunked(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def authority(server: WorkerServer) -> str:
    return urlsplit(server.url).netloc


def assert_json_error(reply: RawReply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == JSON_TYPE, reply
    assert reply.json()["error"]["code"] == code, reply


def filler(count: int) -> str:
    return "".join(f"\r\nx{n}: v" for n in range(count))  # 10 bytes a line or less


def test_an_idempotency_key_after_2100_other_headers_makes_the_retry_a_replay(
    worker_server: WorkerServer,
) -> None:
    body = json.dumps({"email": "ada@example.com", "name": "Ada"}).encode()
    head = (
        f"POST /users HTTP/1.1\r\nHost: {authority(worker_server)}\r\nConnection: close"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}{filler(2100)}"
        "\r\nIdempotency-Key: after-many-headers"
    )
    first = send(worker_server, head, body)
    again = send(worker_server, head, body)
    assert first.status == 201, first
    assert again.status == 201, again
    assert again.headers.get("idempotent-replayed") == "true"
    listing = send(worker_server, f"GET /users HTTP/1.1\r\nHost: {authority(worker_server)}")
    assert len(listing.json()["items"]) == 1


@pytest.mark.parametrize("count", [6_000, 10_000])
def test_headers_past_32_kib_in_many_small_lines_are_431_json(
    worker_server: WorkerServer, count: int
) -> None:
    head = (
        f"GET /users HTTP/1.1\r\nHost: {authority(worker_server)}\r\nConnection: close"
        f"{filler(count)}"
    )
    assert_json_error(send(worker_server, head), 431, "headers_too_large")


def test_a_repeated_header_reaches_the_worker_whole(worker_server: WorkerServer) -> None:
    """Two Idempotency-Key lines are one value the Worker sees ("a, b": not a key, 400),
    never one of them silently kept."""
    body = b'{"email": "a@b.co", "name": "A"}'
    head = (
        f"POST /users HTTP/1.1\r\nHost: {authority(worker_server)}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        "\r\nIdempotency-Key: a\r\nIdempotency-Key: b"
    )
    assert_json_error(send(worker_server, head, body), 400, "bad_request")
    listing = send(worker_server, f"GET /users HTTP/1.1\r\nHost: {authority(worker_server)}")
    assert listing.json()["items"] == []


@pytest.mark.parametrize("target", ["http://{authority}/", "http://elsewhere.example/"])
def test_an_absolute_form_target_is_served_by_its_path(
    worker_server: WorkerServer, target: str
) -> None:
    line = target.format(authority=authority(worker_server))
    reply = send(
        worker_server,
        f"GET {line} HTTP/1.1\r\nHost: {authority(worker_server)}\r\nConnection: close",
    )
    assert reply.status == 200, reply
    assert reply.json()["name"] == "pooled-worker"


@pytest.mark.parametrize(
    "host",
    [
        "[",
        "a b",
        "x:99999",
        "u:p@x",
        "127.0.0.1/openapi.json?",
        "h?q",
        "h#f",
        "%zz",
        "",
        "x:" + "9" * 5000,
    ],
)
def test_an_invalid_host_is_400_json(worker_server: WorkerServer, host: str) -> None:
    reply = send(worker_server, f"GET /users HTTP/1.1\r\nHost: {host}\r\nConnection: close")
    assert_json_error(reply, 400, "bad_request")
    assert "Host" in reply.json()["error"]["message"]


def test_a_missing_host_is_400_json(worker_server: WorkerServer) -> None:
    reply = send(worker_server, "GET /users HTTP/1.1\r\nConnection: close")
    assert_json_error(reply, 400, "bad_request")


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1:8787", "[::1]:80", "api.example.com", "x:"]
)
def test_a_valid_host_does_not_change_the_path(worker_server: WorkerServer, host: str) -> None:
    reply = send(worker_server, f"GET /users HTTP/1.1\r\nHost: {host}\r\nConnection: close")
    assert reply.status == 200, reply
    assert reply.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("target", ["users", "*"])
def test_a_target_that_is_not_a_path_is_400_json(worker_server: WorkerServer, target: str) -> None:
    reply = send(worker_server, f"GET {target} HTTP/1.1\r\nHost: {authority(worker_server)}")
    assert_json_error(reply, 400, "bad_request")
