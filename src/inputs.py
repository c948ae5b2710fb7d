"""Reading what a client sent: JSON bodies into pydantic models, query parameters,
pagination cursors. Every failure is an AppError with a message that says what is wrong."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from errors import BadCursor, BadRequest, MalformedJson, UnsupportedMediaType, ValidationFailed
from models import BIGINT_MAX, Output
from web import Request

M = TypeVar("M", bound=BaseModel)


MAX_JSON_DEPTH = 32  # objects and arrays in a body, the body itself counted as one
_MEDIA_TYPE = "application/json"


def parse_body(request: Request, model: type[M]) -> M:
    """The body as `model`: JSON (RFC 8259, UTF-8), at most `MAX_JSON_DEPTH` deep, with
    every number finite and every string real text; fields typed strictly."""
    _require_json_media_type(request.headers.get("content-type"))
    data = read_json(request.body or b"null")
    if not isinstance(data, dict):
        raise ValidationFailed(
            "the body must be a JSON object", [{"field": "", "message": "expected an object"}]
        )
    problems = list(_content_problems(data, ""))
    if problems:
        raise ValidationFailed("some values cannot be accepted", problems)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ValidationFailed("some fields are invalid", field_errors(exc)) from None


def _require_json_media_type(content_type: str | None) -> None:
    """Media types are case-insensitive and may carry parameters; JSON is UTF-8 only."""
    if content_type is None:
        return
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    charsets = {
        value.strip('"')
        for name, _, value in (p.partition("=") for p in parameters)
        if name.strip() == "charset"
    }
    if media_type != _MEDIA_TYPE or not charsets <= {"utf-8", "utf8"}:
        raise UnsupportedMediaType(
            f"send JSON (Content-Type: application/json), not {content_type}"
        )


def _not_json(literal: str) -> Any:
    raise MalformedJson(f"the body is not valid JSON: {literal} is not a JSON value")


# Past this many levels a body is refused without being parsed: far past MAX_JSON_DEPTH,
# far within every parser's stack (Pyodide's json recursed on the JavaScript stack and
# killed the host at 5,000 levels of objects). Up to it, the refusal names the field.
PARSE_DEPTH_LIMIT = 512
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether `body` nests arrays and objects deeper than `limit`, found by counting
    brackets outside strings, without parsing it."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKEN.finditer(body):
        if token.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token.group() in (b"]", b"}"):
            depth -= 1
    return False


def _too_deep() -> ValidationFailed:
    return ValidationFailed(
        "some values cannot be accepted",
        [{"field": "(body)", "message": f"nests deeper than {MAX_JSON_DEPTH} levels"}],
    )


def read_json(body: bytes) -> Any:
    """Parse a JSON body; NaN and the infinities are not JSON (400); a body nested past
    PARSE_DEPTH_LIMIT is refused before it is parsed (422)."""
    if _nests_deeper_than(body, PARSE_DEPTH_LIMIT):
        raise _too_deep()
    try:
        return json.loads(body, parse_constant=_not_json)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of over 4300 digits
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # valid JSON too deep to parse here: the depth rule refuses it
        raise _too_deep() from None


def _content_problems(value: Any, where: str, depth: int = 1) -> Iterator[dict[str, str]]:
    """Values no field may hold, wherever they are: nesting past the limit, numbers
    beyond a double's range, strings that are not text (a lone UTF-16 surrogate)."""
    field = where or "(body)"
    if isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            yield {"field": field, "message": f"nests deeper than {MAX_JSON_DEPTH} levels"}
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            shown = str(key).encode("utf-8", "backslashreplace").decode()
            inner = f"{where}.{shown}" if where else shown
            if isinstance(key, str) and not _is_text(key):
                yield {"field": inner, "message": "the key holds a lone surrogate, not text"}
            yield from _content_problems(item, inner, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        yield {"field": field, "message": "the number is out of range"}
    elif isinstance(value, str) and not _is_text(value):
        yield {"field": field, "message": "the string holds a lone surrogate, not text"}


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reject_explicit_nulls(data: BaseModel) -> set[str]:
    """The fields a partial update sets; None is refused for any of them (422)."""
    given = data.model_fields_set
    nulls = sorted(name for name in given if getattr(data, name) is None)
    if nulls:
        raise ValidationFailed(
            "some fields are invalid",
            [{"field": name, "message": "may not be null"} for name in nulls],
        )
    return given


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in error.errors(include_url=False)
    ]


_ASCII_INTEGER = re.compile(r"-?[0-9]{1,20}")


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:  # an empty value is a value, refused below like any other
        return default
    if not _ASCII_INTEGER.fullmatch(raw):
        raise BadRequest(f"?{name} must be a whole number in ASCII digits, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"?{name} must be between {low} and {high}, got {value}")
    return value


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None:  # an empty value is a value, refused below like any other
        return None
    if raw not in choices:
        raise BadRequest(f"?{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def query_bool(request: Request, name: str) -> bool | None:
    choice = query_choice(request, name, ("true", "false"))
    return None if choice is None else choice == "true"


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(request: Request, listing: dict[str, Any]) -> int | None:
    """The id a keyset page starts after (or before), from the opaque `?cursor=`.

    A cursor is bound to the listing that issued it and its filters (`listing`, as
    `page` wrote it in): only the same bytes `encode_cursor` wrote for this listing,
    with an id in bigint's positive range, are accepted. Anything else, a cursor of
    another listing or of other filters included, is 400 bad_cursor, never a database
    error or a page of something else."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise BadCursor() from None
    after = position.get("after") if isinstance(position, dict) else None
    if (
        type(after) is not int
        or not 0 < after <= BIGINT_MAX
        or encode_cursor(_position(after, listing)) != raw
    ):
        raise BadCursor()
    return after


def _position(after: int, listing: dict[str, Any]) -> dict[str, Any]:
    return {"after": after, **listing}


def keyset_window(
    request: Request, listing: dict[str, Any], default_limit: int = 20, max_limit: int = 100
) -> tuple[int, int]:
    """`?limit=` (bounded) and the id a page of `listing` starts after (0: from the
    beginning)."""
    limit = query_int(request, "limit", default_limit, 1, max_limit)
    return limit, decode_cursor(request, listing) or 0


def page(
    rows: list[dict[str, Any]], limit: int, model: type[Output], listing: dict[str, Any]
) -> dict[str, Any]:
    """Items of a keyset page fetched with LIMIT limit + 1, and the cursor to the next
    page of `listing` (the route and its filters, which the cursor is bound to).

    Rows from `paging.bounded_page_sql` carry `fetched`; fewer rows than that means the
    page was cut short by its byte bound, so there is more."""
    items = rows[:limit]
    more = len(rows) > limit or bool(rows and rows[0].get("fetched", 0) > len(rows))
    return {
        "items": [model.of(row) for row in items],
        "next_cursor": encode_cursor(_position(items[-1]["id"], listing)) if more else None,
    }
