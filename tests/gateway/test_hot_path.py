"""The shortcuts taken on every request keep the answers they replace (issue 23)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from poolgate.core.errors import AuthenticationFailed, BadRequest
from poolgate.core.values import _json_text, param_to_text
from poolgate.faces.neon_http.app import new_request_id
from poolgate.faces.neon_http.protocol import parse_credentials


def test_a_request_id_is_a_random_version_4_uuid_in_its_canonical_text() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_remembered_connection_string_parses_as_it_did_the_first_time() -> None:
    first = parse_credentials("postgresql://ann:p%40ss@h/db", None)
    again = parse_credentials("postgresql://ann:p%40ss@h/db", None)
    assert first == again and (again.user, again.password, again.database) == ("ann", "p@ss", "db")
    assert parse_credentials("postgresql://ann:p%40ss@h/db", "Bearer tok").password == "tok"


def test_a_refused_connection_string_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(BadRequest):
            parse_credentials("mysql://ann:pw@h/db", None)
        with pytest.raises(AuthenticationFailed):
            parse_credentials("postgresql://ann@h/db", None)
        with pytest.raises(BadRequest):
            parse_credentials(None, None)


@given(st.integers(min_value=-(10**300), max_value=10**300))
def test_an_integer_parameter_is_the_text_json_gives_it(value: int) -> None:
    assert param_to_text(value) == _json_text(value)
