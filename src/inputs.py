"""Reading what a client sent: JSON bodies into pydantic models, query parameters,
pagination cursors. Every failure is an AppError with a message that says what is wrong."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from errors import BadRequest, MalformedJson, UnsupportedMediaType, ValidationFailed
from web import Request

M = TypeVar("M", bound=BaseModel)


def parse_body(request: Request, model: type[M]) -> M:
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.split(";")[0]:
        raise UnsupportedMediaType(
            f"send JSON (Content-Type: application/json), not {content_type}"
        )
    try:
        data = json.loads(request.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedJson("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            "the body must be a JSON object", [{"field": "", "message": "expected an object"}]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("some fields are invalid", field_errors(exc)) from None


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


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"?{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"?{name} must be between {low} and {high}, got {value}")
    return value


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise BadRequest(f"?{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def query_bool(request: Request, name: str) -> bool | None:
    choice = query_choice(request, name, ("true", "false"))
    return None if choice is None else choice == "true"


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(request: Request) -> int | None:
    """The id a keyset page starts after, from the opaque `?cursor=`."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        after = position["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequest("?cursor is not a cursor this API issued") from None
    if not isinstance(after, int) or isinstance(after, bool):
        raise BadRequest("?cursor is not a cursor this API issued")
    return after


def keyset_window(
    request: Request, default_limit: int = 20, max_limit: int = 100
) -> tuple[int, int]:
    """`?limit=` (bounded) and the id a page starts after (0: from the beginning)."""
    limit = query_int(request, "limit", default_limit, 1, max_limit)
    return limit, decode_cursor(request) or 0


def page(rows: list[dict[str, Any]], limit: int, model: type[BaseModel]) -> dict[str, Any]:
    """Items of a keyset page fetched with LIMIT limit + 1, and the cursor to the next."""
    items = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [model.model_validate(row).model_dump(mode="json") for row in items],
        "next_cursor": encode_cursor({"after": items[-1]["id"]}) if more else None,
    }
