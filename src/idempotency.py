"""`Idempotency-Key` on writes, with the semantics Stripe's API made familiar.

A write sent with a key runs in one transaction with `idempotency_claim` (schema.sql)
before it and the key's record after it: the rows the write returned, kept 24 hours.
So a committed write always has its key, and a write that did not commit has none.

- same key, same request, within 24 h: the write does not run again; the handler gets
  the stored rows and answers as it did the first time (`idempotent-replayed: true`);
- same key, another request (method, path or JSON body differ): 422;
- same key while the first request still runs: 409;
- a failure before the write commits (validation, a conflict) stores nothing, so a
  retry runs again and meets the same answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from db.client import Database, Result, Statement
from db.errors import KeyHasOutcome
from errors import BadRequest
from web import Request

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    fingerprint: str  # of the request: method, path and body (JSON compared by value)

    @classmethod
    def of(cls, request: Request) -> IdempotencyKey | None:
        """The request's key, if it sent one (400 when it is malformed)."""
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
            raise BadRequest(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
            )
        return cls(key, _fingerprint(request))


def _fingerprint(request: Request) -> str:
    try:
        body: Any = json.loads(request.body) if request.body else None
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = request.body  # not JSON: the write will refuse it before it runs
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def claim(key: IdempotencyKey) -> Statement:
    """Takes the key, or raises (IK001 running, IK002 other request, IK003 has outcome)."""
    return Statement("SELECT idempotency_claim($1, $2)", (key.key, key.fingerprint))


def kept(key: IdempotencyKey, statement: Statement) -> Statement:
    """`statement` (a write with RETURNING) that also stores what it returned under `key`."""
    first = len(statement.params) + 1
    return Statement(
        f"WITH written AS ({statement.text}),"
        " kept AS (INSERT INTO idempotency_keys (key, fingerprint, rows)"
        f" SELECT ${first}, ${first + 1}, coalesce(jsonb_agg(to_jsonb(written)), '[]')"
        " FROM written)"
        " SELECT * FROM written",
        (*statement.params, key.key, key.fingerprint),
    )


async def stored_outcome(database: Database, key: IdempotencyKey) -> Result:
    """The rows the key's first request returned, as that request's result."""
    stored = await database.query_one("SELECT rows FROM idempotency_keys WHERE key = $1", key.key)
    rows = [] if stored is None else stored["rows"]
    return Result(tuple(rows[0]) if rows else (), rows, "REPLAY", len(rows))


async def keyed_write(
    database: Database,
    key: IdempotencyKey,
    statement: Statement,
    invalidate: tuple[str, ...],
    before: tuple[Statement, ...] = (),
) -> tuple[Result, bool]:
    """Run `statement` (a write with RETURNING) under `key`, after `before` in the same
    transaction: its result, and whether it is the stored outcome of an earlier request
    rather than a new run. (In an interactive transaction: `claim` first, `kept` for its
    last write.)"""
    try:
        *_, result = await database.batch(
            [claim(key), *before, kept(key, statement)], invalidate=invalidate
        )
    except KeyHasOutcome:
        return await stored_outcome(database, key), True
    return result, False
