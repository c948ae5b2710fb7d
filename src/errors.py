"""Application errors, and the one function that turns any failure into a JSON response.

    AppError                  an answer with a status, a machine-readable code, a message
    ├── BadRequest            400 bad_request: a query parameter or header is invalid
    ├── BadCursor             400 bad_cursor: a ?cursor= this API did not issue
    ├── MalformedJson         400 malformed_json: the body is not JSON
    ├── NotFound              404 not_found: no such route or row
    ├── MethodNotAllowed      405 method_not_allowed: the path exists under other methods
    ├── Conflict              409 conflict: a unique value is taken
    ├── KeyInUse              409 idempotency_key_in_use: a request with the key runs
    ├── PayloadTooLarge       413 payload_too_large: the body is over the limit
    ├── UriTooLong            414 uri_too_long: path and query over the limit
    ├── UnsupportedMediaType  415 unsupported_media_type: a body that is not JSON
    ├── ValidationFailed      422 validation_failed: fields failed validation (details)
    ├── KeyReused             422 idempotency_key_reused: the key was for another request
    ├── HeadersTooLarge       431 headers_too_large: the request's headers over the limit
    ├── BadGateway            502 bad_gateway: the database endpoint failed on its side
    ├── ServiceUnavailable    503 database_unavailable: retry after a moment
    └── OutcomeUnknown        504 outcome_unknown: a write was sent, no answer came back

Database errors (db.errors) are translated here too, through one SQLSTATE table, so a
handler never catches them just to re-raise something else.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

from db import errors as db_errors
from web import Response, json_response

log = logging.getLogger("worker")


class AppError(Exception):
    """Base class: an expected failure answered as JSON."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        self.message = message or HTTPStatus(self.status).phrase
        self.details = details
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(AppError):
    """Raised when a query parameter, header or path value is invalid."""

    status, code = 400, "bad_request"


class BadCursor(AppError):
    """Raised for a `?cursor=` this API did not issue for this listing and its filters
    (forged, damaged, or another listing's)."""

    status, code = 400, "bad_cursor"

    def __init__(self) -> None:
        super().__init__(
            "?cursor is not a cursor this API issued for this listing and these filters;"
            " pass next_cursor back as is, to the request that gave it"
        )


class MalformedJson(AppError):
    """Raised when a request body cannot be parsed as JSON."""

    status, code = 400, "malformed_json"


class NotFound(AppError):
    """Raised when no route matches, or the addressed row does not exist."""

    status, code = 404, "not_found"


class MethodNotAllowed(AppError):
    """Raised when the path exists but not under this method."""

    status, code = 405, "method_not_allowed"

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(f"use one of: {', '.join(allowed)}", {"allowed": list(allowed)})
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"allow": ", ".join(self.allowed)}


class Conflict(AppError):
    """Raised when a write collides with existing data (a unique value is taken)."""

    status, code = 409, "conflict"


class KeyInUse(AppError):
    """Raised when a request with the same Idempotency-Key is still running."""

    status, code = 409, "idempotency_key_in_use"


class PayloadTooLarge(AppError):
    """Raised when the request body is over the configured limit."""

    status, code = 413, "payload_too_large"


class UriTooLong(AppError):
    """Raised when the path and query string together are over the limit."""

    status, code = 414, "uri_too_long"


class UnsupportedMediaType(AppError):
    """Raised when a request carries a body that is declared as something other than JSON."""

    status, code = 415, "unsupported_media_type"


class ValidationFailed(AppError):
    """Raised when fields fail validation; `details` lists each field's problem."""

    status, code = 422, "validation_failed"


class KeyReused(AppError):
    """Raised when an Idempotency-Key comes back with a different request."""

    status, code = 422, "idempotency_key_reused"


class HeadersTooLarge(AppError):
    """Raised when the request's headers together are over the limit."""

    status, code = 431, "headers_too_large"


class BadGateway(AppError):
    """Raised when the database endpoint failed on its side (a 5xx other than 503):
    not an outage, so no Retry-After."""

    status, code = 502, "bad_gateway"


class ServiceUnavailable(AppError):
    """Raised when the database cannot be reached or is overloaded; worth a retry."""

    status, code = 503, "database_unavailable"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class OutcomeUnknown(AppError):
    """Raised when a write was sent to the database and no answer came back: it may or
    may not have been applied, so a blind retry could apply it twice. No Retry-After."""

    status, code = 504, "outcome_unknown"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "the write was sent but no answer came back, so it may or may not have been"
            " applied; retrying is safe only with an Idempotency-Key (the same key replays"
            " the first outcome, or applies the write once if it was not applied)"
        )


APP_ERRORS: tuple[type[AppError], ...] = (
    AppError,
    BadRequest,
    BadCursor,
    MalformedJson,
    NotFound,
    MethodNotAllowed,
    Conflict,
    KeyInUse,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    ValidationFailed,
    KeyReused,
    HeadersTooLarge,
    BadGateway,
    ServiceUnavailable,
    OutcomeUnknown,
)


def _query_error_details(error: db_errors.QueryError) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "constraint": error.constraint,
            "column": error.column,
            "detail": error.detail,
        }.items()
        if v
    }


def from_database_error(error: db_errors.DatabaseError, *, write: bool = False) -> AppError:
    """The SQLSTATE table: which database failures mean what to an API client. `write`:
    the request could change data, so a call with no answer leaves its outcome unknown."""
    if isinstance(error, db_errors.OutcomeUnknown) and write:
        return OutcomeUnknown()
    if isinstance(error, db_errors.KeyInUse):
        return KeyInUse(error.message)
    if isinstance(error, db_errors.KeyReused):
        return KeyReused(error.message)
    if isinstance(error, db_errors.UniqueViolation):
        return Conflict("a row with this value already exists", _query_error_details(error))
    if isinstance(error, db_errors.IntegrityError | db_errors.InvalidValue):
        return ValidationFailed(error.message, _query_error_details(error))
    if isinstance(error, db_errors.DatabaseUnavailable | db_errors.Retryable):
        return ServiceUnavailable(f"the database is unavailable: {error.reason}")
    if isinstance(
        error,
        db_errors.EndpointFailed | db_errors.ProtocolError | db_errors.TransactionsUnsupported,
    ):
        return BadGateway(error.reason)
    if isinstance(error, db_errors.ResultTooLarge):
        return BadGateway(f"the database endpoint refused to send the result: {error.reason}")
    log.error("database error: %r", error)
    return AppError()


def error_response(error: BaseException, request_id: str, *, write: bool = False) -> Response:
    """The single place where a failure becomes an HTTP response."""
    if isinstance(error, db_errors.DatabaseError):
        error = from_database_error(error, write=write)
    if not isinstance(error, AppError):
        log.exception("unhandled error in request %s", request_id, exc_info=error)
        error = AppError()
    body = {
        "error": {
            "code": error.code,
            "message": error.message,
            "details": error.details,
            "request_id": request_id,
        }
    }
    return json_response(body, status=error.status, headers=error.headers())
