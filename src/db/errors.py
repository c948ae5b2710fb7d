"""Database errors, translated once from the endpoint's reply (see `from_reply`).

DatabaseError               anything that went wrong reaching or using the database
├── DatabaseUnavailable     network failure, timeout, 503, credentials refused
│   ├── OutcomeUnknown      the call was sent and no answer came: a write may have applied
│   └── TransactionGone     an interactive transaction ended without a commit (rolled back)
├── EndpointFailed          the endpoint failed on its side (a 5xx other than 503)
├── TransactionsUnsupported the endpoint has no interactive transactions (not poolgate)
├── ProtocolError           the endpoint answered something this client cannot read
├── ResultTooLarge          the endpoint refused to send a result that large
└── QueryError              Postgres raised an error (carries SQLSTATE and fields)
    ├── IntegrityError      class 23
    │   ├── UniqueViolation         23505
    │   ├── ForeignKeyViolation     23503
    │   ├── CheckViolation          23514
    │   └── NotNullViolation        23502
    ├── InvalidValue        class 22: a value Postgres cannot accept (22P02, 22003, ...)
    ├── Retryable           40001, 40P01, 55P03, 57014, class 53: try again later
    ├── KeyInUse            IK001: a request with this Idempotency-Key is running
    ├── KeyReused           IK002: this Idempotency-Key was used for another request
    └── KeyHasOutcome       IK003: this Idempotency-Key's outcome is stored (replay it)
"""

from __future__ import annotations

import json
from typing import Any


class DatabaseError(Exception):
    """Base class; `reason` says what happened in words fit for a log or an API answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DatabaseUnavailable(DatabaseError):
    """Raised when the endpoint cannot be reached, times out, or answers 503."""


class EndpointFailed(DatabaseError):
    """Raised when the endpoint answers a server error other than 503: its own fault,
    not an outage that waiting would cure."""


class OutcomeUnknown(DatabaseUnavailable):
    """Raised when the call reached (or may have reached) the endpoint and no answer came
    back: a write in it may or may not have been applied."""


class TransactionGone(DatabaseUnavailable):
    """Raised when an interactive transaction is no longer there: it expired (410) or the
    endpoint forgot it (404, e.g. restarted). It was rolled back: nothing of it committed."""


class TransactionsUnsupported(DatabaseError):
    """Raised when the endpoint has no `POST /transaction` (Neon's own, for one)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(
            f"interactive transactions need poolgate: {endpoint} has no /transaction"
            " (a one-call batch, Database.batch, works with any endpoint)"
        )


class ProtocolError(DatabaseError):
    """Raised when the endpoint's answer is not what the protocol promises."""


class ResultTooLarge(DatabaseError):
    """Raised when the endpoint refused to send a result over its size limit (507)."""


class QueryError(DatabaseError):
    """Raised for an error Postgres reported; every field the endpoint sent is kept."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__(str(fields.get("message") or "query failed"))
        self.message = self.reason
        self.sqlstate: str = str(fields.get("code") or "")
        self.detail: str | None = fields.get("detail")
        self.hint: str | None = fields.get("hint")
        self.constraint: str | None = fields.get("constraint")
        self.table: str | None = fields.get("table")
        self.column: str | None = fields.get("column")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sqlstate={self.sqlstate!r}, message={self.message!r})"


class IntegrityError(QueryError):
    """Raised when a write breaks a constraint (SQLSTATE class 23)."""


class UniqueViolation(IntegrityError):
    """Raised when a unique constraint is violated (23505)."""


class ForeignKeyViolation(IntegrityError):
    """Raised when a referenced row does not exist or is still referenced (23503)."""


class CheckViolation(IntegrityError):
    """Raised when a CHECK constraint fails (23514)."""


class NotNullViolation(IntegrityError):
    """Raised when NULL goes into a NOT NULL column (23502)."""


class InvalidValue(QueryError):
    """Raised when Postgres cannot accept a value (SQLSTATE class 22)."""


class Retryable(QueryError):
    """Raised for conflicts and overloads that a later attempt may not meet."""


class KeyInUse(QueryError):
    """Raised (IK001, schema.sql) while another request with the Idempotency-Key runs."""


class KeyReused(QueryError):
    """Raised (IK002) when the Idempotency-Key was used for a different request."""


class KeyHasOutcome(QueryError):
    """Raised (IK003) when the Idempotency-Key already has a stored outcome."""


_BY_SQLSTATE: dict[str, type[QueryError]] = {
    "IK001": KeyInUse,
    "IK002": KeyReused,
    "IK003": KeyHasOutcome,
    "23505": UniqueViolation,
    "23503": ForeignKeyViolation,
    "23514": CheckViolation,
    "23502": NotNullViolation,
    "40001": Retryable,
    "40P01": Retryable,
    "55P03": Retryable,
    "57014": Retryable,
}
_BY_CLASS: dict[str, type[QueryError]] = {"23": IntegrityError, "22": InvalidValue, "53": Retryable}
# Failures of the connection, not of the statement: the database is unavailable to us.
_UNAVAILABLE_CLASSES = ("08", "28", "3D", "57P")


def query_error(fields: dict[str, Any]) -> DatabaseError:
    sqlstate = str(fields.get("code") or "")
    # 57014 is a statement timeout, 08P01 a request Postgres refused: not outages
    if sqlstate.startswith(_UNAVAILABLE_CLASSES) and sqlstate not in ("57014", "08P01"):
        return DatabaseUnavailable(f"the database refused the connection ({sqlstate})")
    kind = _BY_SQLSTATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2]) or QueryError
    return kind(fields)


def _message(body: bytes) -> str:
    try:
        fields = json.loads(body)
    except ValueError:
        return "no answer from the database"
    message = fields.get("message") if isinstance(fields, dict) else None
    return str(message or "no answer from the database")


def from_reply(status: int, body: bytes) -> DatabaseError:
    """The error an endpoint's non-200 reply stands for."""
    if status == 503:
        return DatabaseUnavailable(f"the database endpoint answered {status}")
    if status == 504:
        return OutcomeUnknown(f"the database endpoint answered 504: {_message(body)}")
    if status >= 500 and status != 507:
        return EndpointFailed(f"the database endpoint failed ({status})")
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        return ProtocolError(f"the database endpoint answered {status} without a JSON error")
    if status == 507:
        return ResultTooLarge(str(fields.get("message") or "result too large"))
    if status == 400 and fields.get("code"):
        return query_error(fields)
    return ProtocolError(
        f"the database endpoint refused the request ({status}): {fields.get('message')}"
    )
