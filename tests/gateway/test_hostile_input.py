"""Bodies no client should send get a 400 that says what is wrong, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.support.services import Gateway


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
