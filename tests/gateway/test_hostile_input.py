"""Bodies no client should send get a 400 that says what is wrong, never a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.support.services import Gateway, GatewayFactory, make_app_url, raw_exchange


def post_raw(gateway: Gateway, app_url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/sql",
        content=body,
        headers={"Neon-Connection-String": app_url, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_refused_as_not_json(
    gateway: Gateway, app_url: str, literal: str
) -> None:
    body = f'{{"query": "SELECT $1::float8", "params": [{literal}]}}'.encode()
    response = post_raw(gateway, app_url, body)
    assert response.status_code == 400
    assert response.json()["message"] == (
        f"request body is not valid JSON: {literal} is not a JSON value"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "SELECT $1", "params": [1e400]}',
        b'{"query": "SELECT $1", "params": [{"a": [-1e999]}]}',
    ],
)
def test_a_number_beyond_a_double_is_refused_as_out_of_range(
    gateway: Gateway, app_url: str, body: bytes
) -> None:
    response = post_raw(gateway, app_url, body)
    assert response.status_code == 400
    assert "number out of range" in response.json()["message"]


def test_an_integer_of_thousands_of_digits_is_a_400(gateway: Gateway, app_url: str) -> None:
    body = b'{"query": "SELECT $1", "params": [' + b"9" * 5000 + b"]}"
    assert post_raw(gateway, app_url, body).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "SELECT $1::text", "params": ["\\ud83d"]}',
        b'{"query": "SELECT \'\\udc00\'"}',
        b'{"query": "SELECT $1::text[]", "params": [["ok", "\\ud83d"]]}',
        b'{"query": "SELECT $1::jsonb", "params": [{"\\ud83d": 1}]}',
        b'{"queries": [{"query": "SELECT 1"}, {"query": "SELECT $1", "params": ["\\udfff"]}]}',
    ],
    ids=["param", "query", "array-element", "object-key", "batch"],
)
def test_a_lone_surrogate_is_refused_as_postgres_refuses_invalid_text(
    gateway: Gateway, app_url: str, body: bytes
) -> None:
    response = post_raw(gateway, app_url, body)
    assert response.status_code == 400
    assert response.json()["code"] == "22021"
    assert "lone surrogate" in response.json()["message"]


def test_a_surrogate_pair_is_text(gateway: Gateway, app_url: str) -> None:
    body = b'{"query": "SELECT $1::text AS t", "params": ["\\ud83d\\ude00"]}'
    response = post_raw(gateway, app_url, body)
    assert response.status_code == 200
    assert response.json()["rows"] == [{"t": "\U0001f600"}]


@pytest.mark.parametrize("body", [b'{"tags": [NaN]}', b"[" * 100_000, b'{"tags": "\\ud83d"}'])
def test_invalidate_refuses_bad_bodies_with_a_400(
    gateway: Gateway, app_url: str, body: bytes
) -> None:
    response = httpx.post(
        f"{gateway.url}/invalidate", content=body, headers={"Neon-Connection-String": app_url}
    )
    assert response.status_code == 400


def test_a_parameter_count_mismatch_is_the_clients_error_not_an_outage(
    gateway: Gateway, app_url: str
) -> None:
    response = post_raw(gateway, app_url, b'{"query": "SELECT $1::text"}')
    assert response.status_code == 400
    assert response.json()["code"] == "08P01"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /sql HTTP/1.1\r\nHost: h\r\nNeon-Connection-String: \xd2\x7f\r\n\r\n",
        b"POST /sql HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["control-char-in-header", "bad-content-length", "not-http"],
)
def test_what_the_parser_refuses_is_answered_with_a_json_400(
    gateway: Gateway, request_bytes: bytes
) -> None:
    head, _, body = raw_exchange(gateway.url, request_bytes).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["message"].startswith("the request is not valid HTTP/1.1")


def test_an_oversized_connection_string_is_refused_without_echoing_it(
    gateway: Gateway,
) -> None:
    secret = "hunter2-" + "p" * 20_000
    request = (
        b"POST /sql HTTP/1.1\r\nHost: h\r\nNeon-Connection-String: postgresql://app:"
        + secret.encode()
        + b"@x/appdb\r\nContent-Length: 2\r\n\r\n{}"
    )
    head, _, body = raw_exchange(gateway.url, request).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"hunter2" not in body
    assert "hunter2" not in gateway.log_text()


def test_a_body_that_trickles_in_is_answered_408_at_the_body_deadline(
    gateways: GatewayFactory, app_url: str
) -> None:
    slow = gateways("--body-timeout", "0.5")
    parts = urlsplit(slow.url)
    # answered while the client still holds back 97 bytes: a gateway that waited for them
    # would leave recv() to the socket's own timeout (an error, not a bound measured here)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            b"POST /sql HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n"
            + f"Neon-Connection-String: {app_url}\r\n\r\n".encode()
            + b'{"q'
        )
        answer = conn.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408", head
    assert b"did not arrive within 0.5 s" in body


async def test_a_huge_unauthenticated_body_does_not_stall_other_requests(
    gateway: Gateway,
) -> None:
    wrong = make_app_url(password="wrong")
    huge = b'{"query": "SELECT 1", "params": [' + b"1," * 3_000_000 + b"1]}"  # ~6 MiB
    async with httpx.AsyncClient(timeout=30) as client:
        started = time.monotonic()
        alone = await client.post(
            f"{gateway.url}/sql", content=huge, headers={"Neon-Connection-String": wrong}
        )
        huge_alone = time.monotonic() - started  # its upload, parse and refusal, measured
        assert alone.status_code == 400
        flood = asyncio.create_task(
            client.post(
                f"{gateway.url}/sql", content=huge, headers={"Neon-Connection-String": wrong}
            )
        )
        await asyncio.sleep(0.05)
        started = time.monotonic()
        health = await client.get(f"{gateway.url}/healthz")
        waited = time.monotonic() - started
        refused = await flood
    # a health check may wait for the one parse of that body, never for more than the
    # huge request took by itself (x3: the two now share this machine)
    assert health.status_code == 200 and waited < 3 * huge_alone
    assert refused.status_code == 400 and "65535" in refused.json()["message"]


# Unicode digits that str.isdigit() accepts: superscript two, Arabic-Indic thirty,
# fullwidth five. Only ASCII digits are numbers on the wire.
NON_ASCII_DIGITS = ["\u00b2", "\u0663\u0660", "\uff15"]


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
@pytest.mark.parametrize("header", ["Poolgate-Cache-TTL", "Poolgate-Cache-SWR"])
def test_a_cache_time_in_non_ascii_digits_is_a_400_naming_the_header(
    gateway: Gateway, app_url: str, header: str, digits: str
) -> None:
    headers = {b"Neon-Connection-String": app_url.encode(), header.encode(): digits.encode()}
    if header != "Poolgate-Cache-TTL":
        headers[b"Poolgate-Cache-TTL"] = b"60"
    response = httpx.post(f"{gateway.url}/sql", json={"query": "SELECT 1"}, headers=headers)
    assert response.status_code == 400
    assert header in response.json()["message"]


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_a_transaction_id_with_non_ascii_digits_is_no_such_transaction(
    gateway: Gateway, app_url: str, digits: str
) -> None:
    headers = {b"Neon-Connection-String": app_url.encode()}
    in_header = httpx.post(
        f"{gateway.url}/sql",
        json={"query": "SELECT 1"},
        headers={**headers, b"Poolgate-Transaction": f"{digits}.x".encode()},
    )
    in_path = httpx.post(f"{gateway.url}/transaction/{quote(digits)}.x/commit", headers=headers)
    for response in (in_header, in_path):
        assert (response.status_code, response.json()) == (404, {"message": "no such transaction"})
