"""The API's shapes at its edges: what clients send (validated) and what they get."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LogLevel = Literal["debug", "info", "warning", "error"]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserCreate(_Input):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    name: str = Field(min_length=1, max_length=100)

    @field_validator("email")
    @classmethod
    def lower_case_email(cls, email: str) -> str:
        return email.lower()


class UserUpdate(_Input):
    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=254)
    name: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("email")
    @classmethod
    def lower_case_email(cls, email: str | None) -> str | None:
        return email.lower() if email is not None else None


class User(BaseModel):
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class PostCreate(_Input):
    author_id: int = Field(gt=0)
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=100_000)


class PostUpdate(_Input):
    title: str | None = Field(default=None, min_length=1, max_length=200)
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
    id: int
    level: LogLevel
    message: str
    meta: dict[str, Any]
    created_at: datetime


class Page(BaseModel):
    """A page of a keyset-paginated list; pass `next_cursor` back as `?cursor=`."""

    items: list[Any]
    next_cursor: str | None
