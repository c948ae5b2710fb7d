"""Parsing of a `POST /sql` request (headers and JSON body) into a typed request.

Everything a client can get wrong is caught here and raised as `BadRequest`, before
any connection is taken from a pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from poolgate.core.errors import AuthenticationFailed, BadRequest, InvalidText
from poolgate.core.requests import (
    MAX_PARAMS,
    SURROGATE_ESCAPE,
    BatchOptions,
    Credentials,
    Isolation,
    SqlRequest,
    Statement,
)
from poolgate.core.values import InvalidParameter, param_to_text


def parse_sql_request(
    headers: Mapping[str, str], body: bytes, *, bearer_is_password: bool = True
) -> SqlRequest:
    """The request a client sent, or `BadRequest` saying what is wrong with it.

    `bearer_is_password`: without API keys, `Authorization: Bearer` carries the Postgres
    password (Neon's protocol); with them it carries the key, checked before this."""
    credentials = request_credentials(headers, bearer_is_password)
    raw_text = headers.get("Neon-Raw-Text-Output") == "true"
    default_array_mode = headers.get("Neon-Array-Mode") == "true"
    payload = json_object(body)
    if "queries" in payload:
        queries = payload["queries"]
        if not isinstance(queries, list):
            raise BadRequest('"queries" must be an array of query objects')
        statements = tuple(
            _statement(item, default_array_mode, f"queries[{index}]")
            for index, item in enumerate(queries)
        )
        batch = batch_options(headers)
    else:
        statements = (_statement(payload, default_array_mode, "body"),)
        batch = None
    if SURROGATE_ESCAPE.search(body):
        _require_text(statements)
    return SqlRequest(credentials, statements, batch, raw_text)


def _require_text(statements: tuple[Statement, ...]) -> None:
    for index, statement in enumerate(statements):
        for where, text in (("the query", statement.query), *_params_of(statement)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidText(f"statement {index}: {where}") from None


def _params_of(statement: Statement) -> list[tuple[str, str]]:
    return [(f"parameter ${n}", p) for n, p in enumerate(statement.params, 1) if p is not None]


def request_credentials(headers: Mapping[str, str], bearer_is_password: bool) -> Credentials:
    authorization = headers.get("Authorization") if bearer_is_password else None
    return parse_credentials(headers.get("Neon-Connection-String"), authorization)


TRANSACTION_HEADER = "Poolgate-Transaction"  # names the interactive transaction a call runs in

# PostgreSQL truncates identifiers at 63 bytes: longer names would alias one role
MAX_NAME_BYTES = 63


def parse_credentials(connection_string: str | None, authorization: str | None) -> Credentials:
    """User, password and database from `Neon-Connection-String`.

    A bearer token in `Authorization`, when given, is the password. A request without a
    password is refused (28P01) without connecting: the gateway never logs in with a
    password of its own (environment, passfile or trust rule). NUL bytes and names over
    63 bytes are refused (400): libpq would cut the connection string at a NUL, and
    Postgres would alias long names.

    Not memoised, though the parse is ~10-20 us of a cache hit: a memo would keep the
    last clients' passwords (wrong ones among them) in plain text for as long as they
    stay in it, where the pool keeps only a salted digest (measured in issue 23: the
    gain was inside this machine's noise).
    """
    if not connection_string:
        raise BadRequest("missing Neon-Connection-String header")
    try:
        url = urlsplit(connection_string)
        url.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise BadRequest("Neon-Connection-String is not a valid URL") from exc
    if url.scheme not in ("postgres", "postgresql"):
        raise BadRequest("Neon-Connection-String must start with postgres:// or postgresql://")
    if not url.username:
        raise BadRequest("Neon-Connection-String has no user name")
    user = unquote(url.username)
    password = unquote(url.password) if url.password is not None else None
    database = unquote(url.path.lstrip("/")) or user
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BadRequest("Authorization must be 'Bearer <token>'")
        password = token.strip()
    for what, name in (("user name", user), ("database name", database)):
        if "\x00" in name:
            raise BadRequest(f"the {what} in Neon-Connection-String holds a NUL byte")
        if len(name.encode()) > MAX_NAME_BYTES:
            raise BadRequest(f"the {what} is over PostgreSQL's {MAX_NAME_BYTES} bytes")
    if password is not None and "\x00" in password:
        raise BadRequest("the password in Neon-Connection-String holds a NUL byte")
    if not password:
        raise AuthenticationFailed()
    return Credentials(user=user, password=password, database=database)


def _not_json(literal: str) -> Any:
    raise BadRequest(f"request body is not valid JSON: {literal} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"request body holds a number out of range: {text[:40]}")
    return value


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (RFC 8259: no NaN, no infinities)."""
    try:
        payload = json.loads(body, parse_constant=_not_json, parse_float=_finite)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of over 4300 digits
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload


def _statement(item: Any, default_array_mode: bool, where: str) -> Statement:
    if not isinstance(item, dict):
        raise BadRequest(f'{where} must be an object with a "query"')
    query = item.get("query")
    if not isinstance(query, str):
        raise BadRequest(f'{where}: "query" must be a string')
    params = item.get("params")
    if params is None:
        params = []
    if not isinstance(params, list):
        raise BadRequest(f'{where}: "params" must be an array')
    if len(params) > MAX_PARAMS:
        raise BadRequest(f"{where}: Postgres takes at most {MAX_PARAMS} parameters per statement")
    array_mode = item.get("arrayMode")
    if array_mode is None:
        array_mode = default_array_mode
    elif not isinstance(array_mode, bool):
        raise BadRequest(f'{where}: "arrayMode" must be true or false')
    try:
        texts = tuple(param_to_text(value) for value in params)
    except (InvalidParameter, ValueError) as exc:
        raise BadRequest(f"{where}: a parameter cannot be sent to Postgres: {exc}") from exc
    return Statement(query=query, params=texts, array_mode=array_mode)


def batch_options(headers: Mapping[str, str]) -> BatchOptions:
    isolation_name = headers.get("Neon-Batch-Isolation-Level")
    isolation = None
    if isolation_name is not None:
        try:
            isolation = Isolation[isolation_name]
        except KeyError:
            allowed = ", ".join(level.name for level in Isolation)
            raise BadRequest(
                f"invalid Neon-Batch-Isolation-Level {isolation_name!r}; expected one of {allowed}"
            ) from None
    return BatchOptions(
        isolation=isolation,
        read_only=_flag(headers, "Neon-Batch-Read-Only"),
        deferrable=_flag(headers, "Neon-Batch-Deferrable"),
    )


def _flag(headers: Mapping[str, str], name: str) -> bool:
    value = headers.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise BadRequest(f"invalid {name} {value!r}; expected true or false")
