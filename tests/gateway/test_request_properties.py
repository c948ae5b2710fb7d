"""Property tests of the gateway's request parsing: any body and headers give a parsed
request or a `GatewayError` (a 4xx), and through the real process never a 5xx."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from poolgate.core.errors import GatewayError
from poolgate.faces.neon_http.protocol import parse_sql_request

from tests.support.fuzzing import any_text, examples, json_values
from tests.support.services import Gateway, make_app_url

# What a client can put in a header: latin-1 text without control characters, trimmed.
HEADER_VALUES = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=40
).filter(lambda value: value == value.strip())
HEADERS = st.fixed_dictionaries(
    {"Neon-Connection-String": st.one_of(st.just(make_app_url()), HEADER_VALUES)},
    optional={
        name: st.one_of(st.sampled_from(["true", "false", "Serializable"]), HEADER_VALUES)
        for name in (
            "Neon-Array-Mode",
            "Neon-Raw-Text-Output",
            "Neon-Batch-Isolation-Level",
            "Neon-Batch-Read-Only",
            "Neon-Batch-Deferrable",
            "Authorization",
        )
    },
)
STATEMENT = st.fixed_dictionaries(
    {"query": st.one_of(st.just("SELECT $1::text AS v"), any_text, json_values(5))},
    optional={"params": st.one_of(st.lists(json_values(8), max_size=4), json_values(5))},
)
PAYLOADS = st.one_of(
    STATEMENT,
    st.fixed_dictionaries({"queries": st.one_of(st.lists(STATEMENT, max_size=3), json_values(5))}),
    json_values(),
)


def encoded(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=True).encode()  # NaN written as NaN, as clients do


@settings(max_examples=examples(500), deadline=None)
@given(headers=HEADERS, body=st.one_of(PAYLOADS.map(encoded), st.binary(max_size=200)))
def test_parsing_any_request_gives_a_request_or_a_gateway_error(
    headers: dict[str, str], body: bytes
) -> None:
    try:
        parse_sql_request(headers, body)
    except GatewayError as error:
        assert error.status == 400


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(headers=HEADERS, payload=PAYLOADS)
def test_any_request_to_the_running_gateway_is_answered_without_a_server_error(
    gateway: Gateway, headers: dict[str, str], payload: Any
) -> None:
    sent = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
    response = httpx.post(f"{gateway.url}/sql", content=encoded(payload), headers=sent, timeout=30)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * (10 * 1024 * 1024),
        b'{"query": "SELECT 1", "params": [' + b"[" * 5_000_000 + b"]}",
        b'{"query": "SELECT 1", "params": [' + b'"x",' * 2_000_000 + b'"x"]}',
    ],
    ids=["10 MiB of nesting", "nested params", "2 million params"],
)
def test_parsing_a_hostile_10_mib_body_stays_in_bounded_memory(body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(GatewayError):
            parse_sql_request({"Neon-Connection-String": make_app_url()}, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024 * 1024
