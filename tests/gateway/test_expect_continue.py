"""`Expect: 100-continue` (RFC 9110 10.1.1): a client that waits before sending its body
is told to go on when the request is acceptable, or gets its final answer at once,
without the body being read; either way it never stalls waiting for an answer."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.support.services import Gateway, GatewayFactory, make_app_url


def head(path: str, body: bytes, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gw", "Connection: close", "Expect: 100-continue"]
    lines += [f"Content-Length: {len(body)}", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(conn: socket.socket) -> bytes:
    """Bytes until a blank line ends a status line and its headers (and what follows
    in the same reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def connect(gateway: Gateway) -> socket.socket:
    parts = urlsplit(gateway.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def test_an_acceptable_request_is_told_100_continue_before_it_sends_its_body(
    gateway: Gateway, app_url: str
) -> None:
    body = json.dumps({"query": "SELECT 1 AS one"}).encode()
    with connect(gateway) as conn:
        conn.sendall(head("/sql", body, Neon_Connection_String=app_url))
        interim = read_answer(conn)  # nothing of the body sent yet
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        conn.sendall(body)
        rest = interim.split(b"\r\n\r\n", 1)[1]
        while chunk := conn.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b'"rows":[{"one":1}]}')


@pytest.mark.parametrize(
    ("path", "length", "status"),
    [("/sql", 50_000, b"413"), ("/nowhere", 10, b"404")],
    ids=["body over the limit", "no such route"],
)
def test_a_request_refused_on_its_head_gets_the_final_answer_without_sending_its_body(
    gateways: GatewayFactory, path: str, length: int, status: bytes
) -> None:
    small = gateways("--max-request-bytes", "2000")
    with connect(small) as conn:
        conn.sendall(head(path, b"x" * length, Neon_Connection_String=make_app_url()))
        answer = read_answer(conn)
    assert answer.split(b" ")[1] == status
    assert b"100 Continue" not in answer
    assert b"application/json" in answer


def test_with_api_keys_a_request_without_one_is_401_before_its_body(
    gateways: GatewayFactory,
) -> None:
    keyed = gateways("--api-keys", "a-key-of-sixteen-characters")
    with connect(keyed) as conn:
        conn.sendall(head("/sql", b"{}", Neon_Connection_String=make_app_url()))
        answer = read_answer(conn)
    assert answer.split(b" ")[1] == b"401"
    assert b"100 Continue" not in answer


def test_an_expectation_other_than_100_continue_is_417(gateway: Gateway, app_url: str) -> None:
    request = head("/sql", b"{}", Neon_Connection_String=app_url).replace(
        b"Expect: 100-continue", b"Expect: something-else"
    )
    with connect(gateway) as conn:
        conn.sendall(request)
        answer = read_answer(conn)
    assert answer.split(b" ")[1] == b"417"
    assert b"application/json" in answer
