"""The database client: one HTTP call per query or per transaction.

Every call asks for raw text in array mode and decodes cells by type OID (db.types), so
values arrive exact. Parameters always travel as params, never inside the SQL. Every
call has a timeout (from the config) and every failure is raised as a `DatabaseError`.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from db.config import DatabaseConfig
from db.errors import (
    DatabaseError,
    DatabaseUnavailable,
    OutcomeUnknown,
    ProtocolError,
    from_reply,
)
from db.transport import HttpCall, HttpReply, Transport, TransportFailure
from db.types import decoder_for

if TYPE_CHECKING:
    from db.transaction import TransactionScope

log = logging.getLogger("worker")


class Isolation(Enum):
    SERIALIZABLE = "Serializable"
    REPEATABLE_READ = "RepeatableRead"
    READ_COMMITTED = "ReadCommitted"
    READ_UNCOMMITTED = "ReadUncommitted"


@dataclass(frozen=True, slots=True)
class Statement:
    text: str
    params: tuple[Any, ...] = ()

    def __repr__(self) -> str:  # parameter values stay out of logs
        return f"Statement({self.text!r}, <{len(self.params)} params>)"


def sql(text: str, *params: Any) -> Statement:
    """A statement with `$1`, `$2`, ... placeholders and their values."""
    return Statement(text, params)


@dataclass(frozen=True, slots=True)
class Cache:
    """A cache strategy for a read (Accelerate's cacheStrategy): fresh for `ttl` seconds,
    then served stale for `swr` more while refreshed; `tags` let writes invalidate it."""

    ttl: int
    swr: int = 0
    tags: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        headers = {"Poolgate-Cache-TTL": str(self.ttl)}
        if self.swr:
            headers["Poolgate-Cache-SWR"] = str(self.swr)
        if self.tags:
            headers["Poolgate-Cache-Tags"] = ",".join(self.tags)
        return headers


@dataclass(frozen=True, slots=True)
class Result:
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    command: str
    row_count: int | None
    cache_status: str = "none"  # ttl | swr | miss | none, from Poolgate-Cache-Status
    age: int | None = None  # seconds, for an answer served from the cache


def encode_param(value: Any) -> Any:
    """A Python value as the JSON the protocol sends (the endpoint turns it into text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # pair with a ::bytea cast in the SQL
    if isinstance(value, dict):
        return value  # the endpoint sends objects as JSON text
    if isinstance(value, list | tuple):
        return [encode_param(item) for item in value]  # a Postgres array
    raise TypeError(f"cannot send a {type(value).__name__} as a query parameter")


class Queries(ABC):
    """`query`, `query_one` and `execute`, for whatever runs one statement (the database,
    or an interactive transaction)."""

    @abstractmethod
    async def run(
        self, statement: Statement, *, cache: Cache | None = None, invalidate: tuple[str, ...] = ()
    ) -> Result: ...

    async def query(self, text: str, *params: Any) -> list[dict[str, Any]]:
        return (await self.run(Statement(text, params))).rows

    async def query_one(self, text: str, *params: Any) -> dict[str, Any] | None:
        rows = await self.query(text, *params)
        return rows[0] if rows else None

    async def execute(self, text: str, *params: Any, invalidate: tuple[str, ...] = ()) -> int:
        """Run a write; the number of rows it touched (0 for commands without a count)."""
        return (await self.run(Statement(text, params), invalidate=invalidate)).row_count or 0


class Database(Queries):
    """Queries over the pooled HTTP endpoint. The transport is injected (see transport)."""

    def __init__(self, config: DatabaseConfig, transport: Transport) -> None:
        self._config = config
        self._transport = transport

    async def run(
        self, statement: Statement, *, cache: Cache | None = None, invalidate: tuple[str, ...] = ()
    ) -> Result:
        """One statement. `cache` lets a read be answered from the endpoint's cache;
        `invalidate` drops those tags once this statement has committed."""
        answer, headers = await self._post(
            statement_body(statement), _cache_headers(cache, invalidate)
        )
        if headers.get("poolgate-invalidate-status") == "failed":
            log.warning("the endpoint committed the write but could not drop tags %s", invalidate)
        return result_of(answer, headers)

    def transaction(
        self,
        *,
        isolation: Isolation | None = None,
        read_only: bool = False,
        deferrable: bool = False,
        timeout: float = 5.0,
        invalidate: tuple[str, ...] = (),
        retries: int = 0,
    ) -> TransactionScope:
        """An interactive transaction (poolgate's `POST /transaction`): read, decide in
        code, write, all atomic. Committed when the block ends cleanly, rolled back when
        it raises (or is cancelled); `invalidate` tags are dropped at the commit.

            async with db.transaction(isolation=Isolation.SERIALIZABLE) as tx:
                row = await tx.query_one("SELECT ...", key)
                await tx.execute("UPDATE ...", key)

        `retries`: re-run the block after a serialization failure or deadlock (40001,
        40P01), up to that many more times; the block is then written as a loop:

            async for attempt in db.transaction(isolation=..., retries=3):
                async with attempt as tx:
                    ...

        `timeout`: seconds before the endpoint rolls the transaction back by itself.
        """
        from db.transaction import TransactionCalls, TransactionOptions, TransactionScope

        options = TransactionOptions(isolation, read_only, deferrable, timeout, invalidate)
        return TransactionScope(TransactionCalls(self._config, self._transport), options, retries)

    async def invalidate(self, tags: tuple[str, ...]) -> None:
        """Drop cached reads carrying these tags (`POST /invalidate` beside `/sql`).

        An endpoint without a cache (404, e.g. Neon's) has nothing to drop."""
        if not tags:
            return
        url = self._config.endpoint.removesuffix("/sql") + "/invalidate"
        reply = await call_endpoint(
            self._config, self._transport, url, {"tags": list(tags)}, sent_matters=False
        )
        if reply.status not in (200, 404):
            raise from_reply(reply.status, reply.body)

    async def batch(
        self,
        statements: Sequence[Statement],
        *,
        isolation: Isolation | None = None,
        read_only: bool = False,
        deferrable: bool = False,
        cache: Cache | None = None,
        invalidate: tuple[str, ...] = (),
    ) -> list[Result]:
        """All statements in one transaction, in one call: all commit or none do.

        Only a `read_only` transaction can be answered from the cache."""
        headers = {
            **batch_headers(isolation, read_only, deferrable),
            **_cache_headers(cache, invalidate),
        }
        body = {"queries": [statement_body(s) for s in statements]}
        answer, reply_headers = await self._post(body, headers)
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(statements):
            raise ProtocolError("a batch answer must hold one result per statement")
        return [result_of(item, reply_headers) for item in results]

    async def _post(
        self, body: dict[str, Any], extra_headers: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        reply = await call_endpoint(
            self._config, self._transport, self._config.endpoint, body, ROWS_AS_TEXT | extra_headers
        )
        if reply.status != 200:
            raise from_reply(reply.status, reply.body)
        return decoded_answer(reply)


# Every cell as Postgres's text, rows as arrays: decoded here by type (db.types).
ROWS_AS_TEXT = {"Neon-Raw-Text-Output": "true", "Neon-Array-Mode": "true"}


async def call_endpoint(
    config: DatabaseConfig,
    transport: Transport,
    url: str,
    body: dict[str, Any] | None,
    extra_headers: dict[str, str] | None = None,
    *,
    sent_matters: bool = True,
) -> HttpReply:
    """One call to the endpoint, with the connection string and the API key (poolgate
    --api-keys) when the Worker has one. `sent_matters`: a reply lost after the call
    left makes its outcome unknown; otherwise the endpoint is merely unavailable."""
    headers = {
        "Content-Type": "application/json",
        "Neon-Connection-String": config.connection_string,
        **({"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}),
        **(extra_headers or {}),
    }
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        return await transport(HttpCall(url, headers, payload, config.timeout))
    except TransportFailure as exc:
        unknown = exc.sent and sent_matters
        raise (OutcomeUnknown if unknown else DatabaseUnavailable)(exc.reason) from None


def decoded_answer(reply: HttpReply) -> tuple[dict[str, Any], dict[str, str]]:
    """A 200 answer's JSON object, and its headers with lower-case names."""
    try:
        decoded = json.loads(reply.body)
    except ValueError:
        raise ProtocolError("the database endpoint answered 200 without JSON") from None
    if not isinstance(decoded, dict):
        raise ProtocolError("the database endpoint answered 200 with a non-object")
    return decoded, {name.lower(): value for name, value in reply.headers.items()}


def batch_headers(isolation: Isolation | None, read_only: bool, deferrable: bool) -> dict[str, str]:
    """A transaction's options, as the protocol's headers name them."""
    headers = {
        "Neon-Batch-Read-Only": str(read_only).lower(),
        "Neon-Batch-Deferrable": str(deferrable).lower(),
    }
    if isolation is not None:
        headers["Neon-Batch-Isolation-Level"] = isolation.value
    return headers


def _cache_headers(cache: Cache | None, invalidate: tuple[str, ...]) -> dict[str, str]:
    headers = cache.headers() if cache is not None else {}
    if invalidate:
        headers["Poolgate-Invalidate-Tags"] = ",".join(invalidate)
    return headers


def statement_body(statement: Statement) -> dict[str, Any]:
    return {"query": statement.text, "params": [encode_param(p) for p in statement.params]}


def result_of(answer: Any, headers: dict[str, str]) -> Result:
    try:
        fields = answer["fields"]
        names = tuple(str(field["name"]) for field in fields)
        decoders = [decoder_for(int(field["dataTypeID"])) for field in fields]
        rows = [
            {
                name: None if cell is None else decode(cell)
                for name, decode, cell in zip(names, decoders, row, strict=True)
            }
            for row in answer["rows"]
        ]
        age = headers.get("age")
        return Result(
            names,
            rows,
            str(answer.get("command") or ""),
            answer.get("rowCount"),
            headers.get("poolgate-cache-status", "none"),
            int(age) if age and age.isdigit() else None,
        )
    except DatabaseError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"unreadable result from the database endpoint: {exc}") from None
