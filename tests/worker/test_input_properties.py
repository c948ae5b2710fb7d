"""Property tests of the Worker's input layer: whatever a client sends, the answer is a
JSON 2xx/3xx/4xx, never a 5xx or an exception, and reading input stays bounded."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from errors import AppError
from inputs import parse_body
from models import LogCreate, PostCreate, PostUpdate, UserCreate, UserUpdate
from tests.support.fuzzing import any_text, deep, examples, json_values
from tests.worker.conftest import WorkerClient
from web import Request

INPUT_MODELS: list[type[BaseModel]] = [UserCreate, UserUpdate, PostCreate, PostUpdate, LogCreate]
FIELD_NAMES = sorted({name for model in INPUT_MODELS for name in model.model_fields})
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "Application/JSON; charset=UTF-8", "text/plain", ""]),
    st.text(max_size=30),
)


def body_bytes() -> st.SearchStrategy[bytes]:
    """Objects with the models' own field names (so validation is reached), any JSON,
    and plain bytes."""
    shaped = st.dictionaries(
        st.one_of(st.sampled_from(FIELD_NAMES), any_text), json_values(20), max_size=6
    )
    as_json = st.one_of(shaped, json_values()).map(
        lambda value: json.dumps(value, ensure_ascii=True).encode()
    )
    return st.one_of(as_json, st.binary(max_size=200))


@settings(max_examples=examples(400), deadline=None)
@given(model=st.sampled_from(INPUT_MODELS), body=body_bytes(), content_type=CONTENT_TYPES)
def test_parsing_any_body_gives_a_model_or_a_4xx(
    model: type[BaseModel], body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    try:
        parse_body(Request("POST", "/", headers=headers, body=body), model)
    except AppError as error:
        assert 400 <= error.status < 500


def test_reading_a_1_mib_body_of_pure_nesting_stays_in_bounded_memory() -> None:
    body = b"[" * (1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(AppError):
            parse_body(Request("POST", "/", body=body), LogCreate)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_a_body_at_the_depth_limit_is_accepted_and_one_past_it_is_not() -> None:
    def log_body(meta: Any) -> Request:
        return Request("POST", "/", body=json.dumps({"message": "m", "meta": meta}).encode())

    parse_body(log_body({"a": deep(29)}), LogCreate)  # body, meta, 30 lists: 32 levels
    with pytest.raises(AppError) as refused:
        parse_body(log_body({"a": deep(30)}), LogCreate)
    assert refused.value.status == 422


WRITE_TARGETS = [
    ("POST", "/users"),
    ("PATCH", "/users/1"),
    ("POST", "/posts"),
    ("PATCH", "/posts/1"),
    ("POST", "/logs"),
]
QUERY_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(target=st.sampled_from(WRITE_TARGETS), body=body_bytes(), content_type=CONTENT_TYPES)
async def test_any_write_through_the_real_database_is_never_a_server_error(
    client: WorkerClient, target: tuple[str, str], body: bytes, content_type: str | None
) -> None:
    method, path = target
    headers = {} if content_type is None else {"content-type": content_type}
    reply = await client.request(method, path, body=body, headers=headers)
    assert reply.status < 500, reply.body
    assert reply.headers["content-type"] == "application/json; charset=utf-8"


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(["/users", "/posts", "/logs", "/users/1/posts"]),
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "published", "level", "x"]), QUERY_TEXT, max_size=4
    ),
)
async def test_any_query_string_on_a_listing_is_never_a_server_error(
    client: WorkerClient, path: str, query: dict[str, str]
) -> None:
    reply = await client.get(f"{path}?{urlencode(query)}")
    assert reply.status < 500, reply.body
