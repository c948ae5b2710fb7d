"""Completeness: every route resolves and is documented, every error maps to a status."""

from __future__ import annotations

import re

import pytest

import db.errors as db_errors
from app import NotConfigured, RouteSpec
from errors import APP_ERRORS, AppError, MethodNotAllowed, ServiceUnavailable, error_response
from openapi import build_openapi
from router import MatchKind
from routes.table import ROUTES, build_app

SAMPLE = {"int": "7", "str": "sample", "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}


def sample_path(pattern: str) -> str:
    return re.sub(r"{[a-z_]+(?::([a-z]+))?}", lambda m: SAMPLE[m.group(1) or "str"], pattern)


@pytest.mark.parametrize("spec", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_every_route_in_the_table_resolves_to_its_handler(spec: RouteSpec) -> None:
    match = build_app().router.match(spec.method, sample_path(spec.path))
    assert match.kind is MatchKind.FULL
    assert match.route is not None and match.route.handler is spec


def test_every_route_appears_in_openapi_with_its_method() -> None:
    document = build_openapi(ROUTES)
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    expected = {(r.method, re.sub(r"{([a-z_]+)(?::[a-z]+)?}", r"{\1}", r.path)) for r in ROUTES}
    assert documented == expected


BODY_REFUSALS = {"400", "413", "415", "422"}  # not JSON, too large, not JSON's type, invalid


@pytest.mark.parametrize("spec", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_every_route_documents_the_refusals_its_request_can_meet(spec: RouteSpec) -> None:
    """A body-taking route lists every way parse_body refuses a body; every write lists
    413 (the app refuses an oversized body before the route runs); every route lists
    414, 431 and 500. (schemathesis does not catch a gap here: see
    test_openapi_conformance.)"""
    path = re.sub(r"{([a-z_]+)(?::[a-z]+)?}", r"{\1}", spec.path)
    listed = set(build_openapi(ROUTES)["paths"][path][spec.method.lower()]["responses"])
    assert {"414", "431", "500"} <= listed
    if spec.body is not None:
        assert listed >= BODY_REFUSALS
    if spec.method in ("POST", "PATCH", "DELETE"):
        assert {"400", "409", "413", "422", "504"} <= listed


@pytest.mark.parametrize("kind", [*APP_ERRORS, NotConfigured], ids=lambda k: k.__name__)
def test_every_app_error_maps_to_its_status_and_code(kind: type[AppError]) -> None:
    error = MethodNotAllowed(("GET",)) if kind is MethodNotAllowed else kind()
    response = error_response(error, "req-1")
    assert response.status == kind.status
    assert f'"code":"{kind.code}"'.encode() in response.body
    assert b'"request_id":"req-1"' in response.body


DATABASE_ERRORS = [
    (db_errors.UniqueViolation({"code": "23505", "message": "dup"}), 409),
    (db_errors.ForeignKeyViolation({"code": "23503", "message": "fk"}), 422),
    (db_errors.CheckViolation({"code": "23514", "message": "check"}), 422),
    (db_errors.NotNullViolation({"code": "23502", "message": "null"}), 422),
    (db_errors.IntegrityError({"code": "23P01", "message": "exclusion"}), 422),
    (db_errors.InvalidValue({"code": "22P02", "message": "bad"}), 422),
    (db_errors.Retryable({"code": "40001", "message": "serialize"}), 503),
    (db_errors.QueryError({"code": "42601", "message": "syntax"}), 500),
    (db_errors.DatabaseUnavailable("down"), 503),
    (db_errors.OutcomeUnknown("sent, no answer"), 503),  # on a read; see the test below
    (db_errors.KeyInUse({"code": "IK001", "message": "running"}), 409),
    (db_errors.KeyReused({"code": "IK002", "message": "other request"}), 422),
    # handled by idempotency.keyed_write (a replay); reaching the mapper would be a bug
    (db_errors.KeyHasOutcome({"code": "IK003", "message": "stored"}), 500),
    (db_errors.EndpointFailed("endpoint failed (500)"), 502),
    (db_errors.ProtocolError("garbled"), 502),
    (db_errors.ResultTooLarge("big"), 502),
    (db_errors.TransactionGone("expired: rolled back"), 503),  # nothing of it committed
    (db_errors.TransactionsUnsupported("https://neon.example"), 502),
]


def test_the_database_error_table_covers_every_database_error_class() -> None:
    def subclasses(cls: type) -> set[type]:
        found: set[type] = {cls}
        sub: type
        for sub in cls.__subclasses__():
            found |= subclasses(sub)
        return found

    covered = {type(error) for error, _ in DATABASE_ERRORS}
    assert subclasses(db_errors.DatabaseError) - {db_errors.DatabaseError} == covered


@pytest.mark.parametrize(("error", "status"), DATABASE_ERRORS, ids=lambda e: type(e).__name__)
def test_every_database_error_maps_to_a_status(error: db_errors.DatabaseError, status: int) -> None:
    response = error_response(error, "req-2")
    assert response.status == status
    if status == 503:
        assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("23505", db_errors.UniqueViolation),
        ("23503", db_errors.ForeignKeyViolation),
        ("23514", db_errors.CheckViolation),
        ("23502", db_errors.NotNullViolation),
        ("23P01", db_errors.IntegrityError),
        ("22P02", db_errors.InvalidValue),
        ("22003", db_errors.InvalidValue),
        ("40001", db_errors.Retryable),
        ("40P01", db_errors.Retryable),
        ("57014", db_errors.Retryable),
        ("53300", db_errors.Retryable),
        ("42P01", db_errors.QueryError),
        ("28P01", db_errors.DatabaseUnavailable),
        ("3D000", db_errors.DatabaseUnavailable),
        ("57P01", db_errors.DatabaseUnavailable),
        ("08006", db_errors.DatabaseUnavailable),
    ],
)
def test_sqlstates_translate_through_one_table(code: str, kind: type) -> None:
    assert type(db_errors.query_error({"code": code, "message": "m"})) is kind


def test_an_unknown_exception_is_a_generic_500_without_details() -> None:
    response = error_response(RuntimeError("secret internals"), "req-3")
    assert response.status == 500
    assert b"secret internals" not in response.body
    assert ServiceUnavailable().headers() == {"retry-after": "1"}


def test_an_unknown_outcome_is_504_on_a_write_and_503_on_a_read() -> None:
    error = db_errors.OutcomeUnknown("sent, no answer")
    write = error_response(error, "req-3", write=True)
    read = error_response(error, "req-4", write=False)
    assert (write.status, "retry-after" in write.headers) == (504, False)
    assert (read.status, read.headers["retry-after"]) == (503, "1")
