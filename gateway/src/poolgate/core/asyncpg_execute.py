"""`/sql` over asyncpg: the prototype of issue 23 (b), for measurement only.

`POOLGATE_DRIVER=asyncpg` (asyncpg comes with the `bench` dependency group). It answers
what the bench sends and shows what asyncpg costs per request at its fastest: named
prepared statements from its cache, binary results turned back into text with `str()`.
What the protocol needs and asyncpg's public API does not give is left out and named
here, so that the numbers are read for what they are: each field's table OID, column
number and type modifier (answered as 0, 0, -1), Postgres's own text form of every type
(`str()` of the decoded value differs for timestamps, numerics with trailing zeros,
bytea, arrays, ranges, composites), untyped parameters (asyncpg sends them typed as the
server inferred, which changes errors for mixed types), notices, streaming in chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from poolgate.config import Settings
from poolgate.core.errors import AuthenticationFailed, BadRequest, OutcomeUnknown, Unavailable
from poolgate.core.execute import Outcome, _Budget, _dumps
from poolgate.core.requests import SqlRequest, is_ascii_number


class AsyncpgPools:
    """asyncpg pools per (user, database, password digest), no reset on release."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[tuple[str, str, bytes], Any] = {}

    async def run(self, request: SqlRequest, read_only: bool, deadline: float) -> Outcome:
        import asyncpg  # type: ignore[import-untyped,import-not-found,unused-ignore]

        credentials = request.credentials
        key = (
            credentials.user,
            credentials.database,
            hashlib.sha256((credentials.password or "").encode()).digest(),
        )
        pool = self._pools.get(key)
        if pool is None:
            upstream = self._settings.upstream
            try:
                pool = await asyncpg.create_pool(
                    host=upstream.get("host"),
                    port=int(upstream.get("port", "5432")),
                    user=credentials.user,
                    password=credentials.password,
                    database=credentials.database,
                    min_size=0,
                    max_size=self._settings.pool_size,
                    reset=_no_reset,
                    init=_text_codecs,
                    server_settings={"application_name": "poolgate"},
                )
            except asyncpg.InvalidPasswordError:
                raise AuthenticationFailed() from None
            self._pools[key] = pool
        if request.batch is not None or len(request.statements) != 1:
            raise BadRequest("the asyncpg prototype runs single queries only")
        statement = request.statements[0]
        try:
            async with asyncio.timeout_at(deadline), pool.acquire() as connection:
                prepared = await connection.prepare(statement.query)
                if read_only:  # what the cache asks of what it stores
                    async with connection.transaction(readonly=True):
                        records = await prepared.fetch(*statement.params)
                else:
                    records = await prepared.fetch(*statement.params)
                attributes = prepared.get_attributes()
                tag = prepared.get_statusmsg()
        except TimeoutError:
            raise OutcomeUnknown("the database did not answer in time") from None
        except asyncpg.PostgresError as exc:
            raise Unavailable(f"asyncpg prototype: {exc}") from None
        rows = [[None if v is None else str(v) for v in record] for record in records]
        words = tag.split(" ")
        count = int(words[-1]) if len(words) > 1 and is_ascii_number(words[-1]) else None
        fields = [
            {
                "name": attribute.name,
                "dataTypeID": attribute.type.oid,
                "tableID": 0,
                "columnID": 0,
                "dataTypeSize": -1,
                "dataTypeModifier": -1,
                "format": "text",
            }
            for attribute in attributes
        ]
        body = _dumps(
            {
                "command": words[0],
                "rowCount": count,
                "rowAsArray": statement.array_mode,
                "fields": fields,
                "rows": rows,
            }
        )
        _Budget(self._settings.max_response_bytes).spend(body)
        return Outcome(body.encode(), len(rows))


# Scalar types read and written as Postgres text (asyncpg's binary codecs would need the
# parameters typed as Python values). Every other type keeps asyncpg's own codec.
_TEXT_TYPES = (
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "oid",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "json",
    "jsonb",
)


def _same(text: str) -> str:
    return text


async def _text_codecs(connection: Any) -> None:
    for name in _TEXT_TYPES:
        await connection.set_type_codec(
            name, schema="pg_catalog", encoder=_same, decoder=_same, format="text"
        )


async def _no_reset(connection: Any) -> None:
    """What the gateway's session tracking makes safe for the bench's read."""
