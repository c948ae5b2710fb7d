"""Every failure the gateway answers, and the single place they become HTTP.

    GatewayError                    any failure answered with a JSON body
    ├── BadRequest                  400: malformed body, header or connection string
    ├── InvalidText                 400 + SQLSTATE 22021: a string that is not text
    ├── AuthenticationFailed        400 + SQLSTATE 28P01: credentials refused upstream
    ├── Unauthorized                401: API keys are on and the request has none of them
    ├── QueryFailed                 400: Postgres raised an error for a statement
    ├── RouteNotFound               404: no such endpoint
    ├── NoSuchTransaction           404: unknown, finished or someone else's transaction
    ├── MethodNotAllowed            405: wrong method on /healthz, /readyz, /metrics
    ├── BodyTimeout                 408: the body did not arrive within --body-timeout
    ├── TransactionBusy             409: a call on a transaction while another one runs
    ├── TransactionExpired          410: the transaction's timeout passed (rolled back)
    ├── RequestTooLarge             413: request body over the configured limit
    ├── ExpectationFailed           417: an Expect header other than 100-continue
    ├── TooManyLogins               429 + Retry-After: failed logins throttled
    ├── ResponseTooLarge            507: result over the configured limit
    ├── Unavailable                 503 + Retry-After: pool wait exceeded, upstream down
    └── OutcomeUnknown              504: sent upstream, no answer (deadline, connection lost)

The driver's exceptions (`wire`'s) are translated into these once, in `pool` and
`execute`.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Diagnostic fields of a Postgres error, in the order Neon's proxy reports them,
# paired with the ErrorResponse field code that carries each (protocol-error-fields).
_DIAGNOSTIC_FIELDS = (
    ("code", "C"),
    ("detail", "D"),
    ("hint", "H"),
    ("position", "P"),
    ("internalPosition", "p"),
    ("internalQuery", "q"),
    ("severity", "V"),  # not localized
    ("where", "W"),
    ("table", "t"),
    ("column", "c"),
    ("schema", "s"),
    ("dataType", "d"),
    ("constraint", "n"),
    ("file", "F"),
    ("line", "L"),
    ("routine", "R"),
)


class GatewayError(Exception):
    """Base class: a failure answered with `status` and a JSON body holding `message`.

    Raised as itself only for an unexpected failure (500, no details).
    """

    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"message": self.message}

    def headers(self) -> dict[str, str]:
        return {}

    @property
    def sqlstate(self) -> str | None:
        return None


class BadRequest(GatewayError):
    """Raised when the request's body, a header or the connection string is malformed."""

    status = 400


class InvalidText(GatewayError):
    """Raised when a query or parameter holds a lone UTF-16 surrogate: not text in any
    encoding, so refused before Postgres as Postgres refuses invalid UTF-8 (22021)."""

    status = 400

    def __init__(self, where: str) -> None:
        super().__init__(
            f'invalid byte sequence for encoding "UTF8": {where} holds a lone surrogate'
        )

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "code": "22021", "severity": "ERROR"}

    @property
    def sqlstate(self) -> str | None:
        return "22021"


class AuthenticationFailed(GatewayError):
    """Raised when Postgres refuses the credentials (or database) of a connection string.

    The message never says which part was wrong.
    """

    status = 400

    def __init__(self) -> None:
        super().__init__("password authentication failed")

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "code": "28P01", "severity": "FATAL"}

    @property
    def sqlstate(self) -> str | None:
        return "28P01"


class Unauthorized(GatewayError):
    """Raised when API keys are configured and the request carries none of them."""

    status = 401

    def __init__(self) -> None:
        super().__init__("missing or invalid API key: send Authorization: Bearer <key>")

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="poolgate"'}


class QueryFailed(GatewayError):
    """Raised when Postgres reports an error for a statement; carries its diagnostics."""

    status = 400

    def __init__(self, fields: dict[str, str]) -> None:
        """`fields`: the ErrorResponse's, by field code (see `_DIAGNOSTIC_FIELDS`)."""
        super().__init__(fields.get("M", "").strip() or "the statement failed")
        self.fields: dict[str, str | None] = {
            name: fields.get(code) for name, code in _DIAGNOSTIC_FIELDS
        }

    @classmethod
    def refused_value(cls, message: str, sqlstate: str) -> QueryFailed:
        """An error for a value refused before Postgres saw it, spelled as Postgres's."""
        return cls({"M": message, "C": sqlstate, "S": "ERROR", "V": "ERROR"})

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.fields}

    @property
    def sqlstate(self) -> str | None:
        return self.fields["code"]


class RouteNotFound(GatewayError):
    """Raised for a path the gateway does not serve."""

    status = 404


class NoSuchTransaction(GatewayError):
    """Raised for a transaction id that is unknown, finished, or opened with other
    credentials: the same answer in every case, so it tells nothing about the id."""

    status = 404

    def __init__(self) -> None:
        super().__init__("no such transaction")


class TransactionBusy(GatewayError):
    """Raised for a call on a transaction while another call on it runs."""

    status = 409

    def __init__(self) -> None:
        super().__init__("another call on this transaction is running: one at a time")


class TransactionExpired(GatewayError):
    """Raised for a call after the transaction's timeout: it was rolled back then."""

    status = 410

    def __init__(self) -> None:
        super().__init__("transaction expired")


class MethodNotAllowed(GatewayError):
    """Raised for a method an operational endpoint does not answer."""

    status = 405


class BodyTimeout(GatewayError):
    """Raised when a request's body is not all there within the body deadline."""

    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")


class RequestTooLarge(GatewayError):
    """Raised when the request body is over the configured limit."""

    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request is too large (max is {limit} bytes)")


class ExpectationFailed(GatewayError):
    """Raised for an `Expect` header the gateway cannot meet (anything but 100-continue)."""

    status = 417

    def __init__(self) -> None:
        super().__init__("unsupported expectation: only Expect: 100-continue is understood")


class TooManyLogins(GatewayError):
    """Raised when a client address or a user has failed to log in too often lately."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins: try again later")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ResponseTooLarge(GatewayError):
    """Raised while rows are produced, as soon as the answer would be over the limit."""

    status = 507

    def __init__(self, limit: int) -> None:
        super().__init__(f"response is too large (max is {limit} bytes)")


class Unavailable(GatewayError):
    """Raised when no connection can be had in time: pool exhausted or upstream down."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class OutcomeUnknown(GatewayError):
    """Raised when a request reached Postgres and no answer came back: the gateway's
    deadline passed (a server that stopped answering does not enforce its own statement
    timeout) or the connection broke mid-request. A write in it may have committed, so
    this is not "retry me": no Retry-After."""

    status = 504
