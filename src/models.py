"""The API's shapes at its edges: what clients send (validated) and what they get.

Input rules (the README's API section repeats them): fields are typed strictly (an
integer is a JSON integer, never a string or a boolean; a string is a JSON string);
text is stored exactly as sent, except an e-mail address, which is lower-cased because
that is what makes two addresses the same (white space around it is refused, not
trimmed); names and titles need one character that is not white space.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from web import RawJson

LogLevel = Literal["debug", "info", "warning", "error"]
# The pattern as /openapi.json's readers (ECMA-262) read it; Python's `$` also matches
# before a final newline, so the Worker checks the whole value (full_email).
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
BIGINT_MAX = 2**63 - 1


def _left_out_or_given(schema: dict[str, Any]) -> None:
    """A partial update's field may be left out, but never null: say so in the schema
    (pydantic would write `anyOf: [..., {"type": "null"}]` and `default: null`)."""
    branches = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    schema.pop("default", None)


def optional(**constraints: Any) -> Any:
    """A field a partial update may leave out; an explicit null is refused (422)."""
    return Field(default=None, json_schema_extra=_left_out_or_given, **constraints)


def full_email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise ValueError("the whole value must be one e-mail address, with nothing after it")
    return value


# Two addresses that differ only in case reach the same mailbox in practice: lower-cased.
Email = Annotated[
    str,
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
    AfterValidator(full_email),
]
VISIBLE = r"\S"  # names and titles need one character that is not white space

# A stored JSON document, served as Postgres wrote it (never parsed by the Worker).
StoredJson = Annotated[
    RawJson,
    BeforeValidator(lambda v: v if isinstance(v, RawJson) else RawJson(str(v))),
    WithJsonSchema({"type": "object"}),
]


class _Input(BaseModel):
    # python-re: patterns mean what they mean in the OpenAPI document's readers
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


class UserCreate(_Input):
    email: Email = Field(pattern=EMAIL_PATTERN, max_length=254)
    name: str = Field(pattern=VISIBLE, max_length=100)


class UserUpdate(_Input):
    email: Email | None = optional(pattern=EMAIL_PATTERN, max_length=254)
    name: str | None = optional(pattern=VISIBLE, max_length=100)


class Output(BaseModel):
    """A response model; `of(row)` is a database row as this model serves it."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Any:
        return cls.model_validate(row)


class Typed(Output):
    """A response model whose every field the database already types exactly (db.types
    decodes each column by its type OID into the field's Python type): `of(row)` keeps
    the model's fields, in its order, without validating them again, which on the Worker
    costs more CPU than reading the row did.

    Only for rows in the database's own answer: a write's may be a stored outcome
    (idempotency replays the first answer's rows from JSON, timestamps as text), which
    `model_validate` types again."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Any:
        return {name: row[name] for name in cls.model_fields}


class User(Typed):
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class PostCreate(_Input):
    author_id: int = Field(gt=0, le=BIGINT_MAX)
    title: str = Field(pattern=VISIBLE, max_length=200)
    body: str = Field(default="", max_length=100_000)


class PostUpdate(_Input):
    title: str | None = optional(pattern=VISIBLE, max_length=200)
    body: str | None = optional(max_length=100_000)


class PostTransfer(_Input):
    to_user_id: int = Field(gt=0, le=BIGINT_MAX)


class Post(Typed):
    id: int
    author_id: int
    title: str
    body: str
    published: bool
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


class LogCreate(_Input):
    level: LogLevel = "info"
    message: str = Field(min_length=1, max_length=2000)
    meta: dict[str, Any] = Field(default_factory=dict)


class Log(Output):  # meta arrives as text and is served as RawJson: validated
    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: int
    level: LogLevel
    message: str
    meta: StoredJson
    created_at: datetime


class Page(BaseModel):
    """A page of a keyset-paginated list; pass `next_cursor` back as `?cursor=`."""

    items: list[Any]
    next_cursor: str | None
