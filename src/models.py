"""The API's shapes at its edges: what clients send (validated) and what they get.

Input rules (the README's API section repeats them): fields are typed strictly (an
integer is a JSON integer, never a string or a boolean; a string is a JSON string);
text is stored exactly as sent, except an e-mail address, which is trimmed and
lower-cased because that is what makes two addresses the same; names and titles need
one visible character.
"""

from __future__ import annotations

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
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
BIGINT_MAX = 2**63 - 1


def _visible(text: str) -> str:
    if not text.strip():
        raise ValueError("must contain a visible character")
    return text


def _normal_email(email: str) -> str:
    return email.strip().lower()


Email = Annotated[str, BeforeValidator(lambda v: _normal_email(v) if isinstance(v, str) else v)]
VisibleText = Annotated[str, AfterValidator(_visible)]
# A stored JSON document, served as Postgres wrote it (never parsed by the Worker).
StoredJson = Annotated[
    RawJson,
    BeforeValidator(lambda v: v if isinstance(v, RawJson) else RawJson(str(v))),
    WithJsonSchema({"type": "object"}),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserCreate(_Input):
    email: Email = Field(pattern=EMAIL_PATTERN, max_length=254)
    name: VisibleText = Field(max_length=100)


class UserUpdate(_Input):
    email: Email | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=254)
    name: VisibleText | None = Field(default=None, max_length=100)


class User(BaseModel):
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class PostCreate(_Input):
    author_id: int = Field(gt=0, le=BIGINT_MAX)
    title: VisibleText = Field(max_length=200)
    body: str = Field(default="", max_length=100_000)


class PostUpdate(_Input):
    title: VisibleText | None = Field(default=None, max_length=200)
    body: str | None = Field(default=None, max_length=100_000)


class Post(BaseModel):
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


class Log(BaseModel):
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
