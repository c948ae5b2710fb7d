"""Plain request and response values the app works with, free of any runtime SDK.

The Workers adapter and the CPython server both translate to and from these, so the
route table runs unchanged in either.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
MAX_BODY_BYTES = 1024 * 1024  # larger request bodies are refused (413) without being read
MAX_URL_BYTES = 8 * 1024  # path and query string together (414 beyond)
MAX_HEADER_BYTES = 32 * 1024  # every header line together (431 beyond): header_block_bytes


def header_block_bytes(headers: Iterable[tuple[str, str]]) -> int:
    """The size of the headers, each counted as its line `name: value` and CRLF (the
    local hosts count the raw lines, the app the ones it was given)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def parse_query(query_string: str) -> dict[str, str]:
    """`?a=1&b=` as every host hands it to the app (blank values kept). A repeated name
    keeps its last value here; the app refuses a repeated parameter a route takes."""
    return dict(parse_qsl(query_string, keep_blank_values=True))


def repeated_names(query_string: str) -> set[str]:
    """The query parameter names given more than once."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for name, _ in parse_qsl(query_string, keep_blank_values=True):
        (repeated if name in seen else seen).add(name)
    return repeated


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as sent: percent-encoding kept, so an encoded "/" never splits a segment
    query: Mapping[str, str] = field(default_factory=dict)
    query_string: str = ""  # as sent, for answers that must repeat it exactly
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""
    body_too_large: bool = False  # set by the adapter when it refused to read the body


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class RawJson:
    """JSON text sent exactly as it is (a stored document passes through unparsed, so
    no content, however deep, can make its own answer fail). Not a dataclass: pydantic
    would dump a dataclass as a dict instead of handing this value through."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJson({self.text[:40]!r}...)"


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "model_dump"):
        return value.model_dump()  # python mode: RawJson fields stay themselves
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(data: Any) -> bytes:
    raw: list[str] = []
    marker = ""  # drawn at the first RawJson: most answers hold none

    def default(value: Any) -> Any:
        nonlocal marker
        if isinstance(value, RawJson):
            if not raw:
                marker = f"raw-json-{secrets.token_hex(16)}-"  # unguessable: no content collides
            raw.append(value.text)
            return f"{marker}{len(raw) - 1}"
        return _to_json(value)

    text = json.dumps(data, default=default, ensure_ascii=False, separators=(",", ":"))
    if raw:
        text = re.sub(f'"{marker}([0-9]+)"', lambda found: raw[int(found[1])], text)
    return text.encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        status=status,
        body=encode_json(data),
        headers={"content-type": JSON_CONTENT_TYPE, **(headers or {})},
    )
