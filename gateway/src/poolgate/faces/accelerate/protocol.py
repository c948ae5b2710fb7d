"""What an Accelerate request says: its client version, its body (a query plan and its
parameters, or a transaction's options), its cache headers, and the tables its SQL reads
and writes (the model tags of read-after-write without manual tags).

Everything a client can get wrong is raised here as `InvalidRequest` or
`UnsupportedClient`, before anything reaches the companion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from poolgate.core import cache_policy
from poolgate.core.errors import BadRequest, GatewayError, InvalidText
from poolgate.core.requests import SURROGATE_ESCAPE

# The generated client's version (`prisma generate`'s, which Prisma-Engine-Hash carries)
# whose query plans the companion's @prisma/client-engine-runtime interprets: the plan
# format is Prisma's internal one and changes between minor releases.
SUPPORTED_CLIENTS = ("7.10.0", "7.10.1")
MAX_PLAN_DEPTH = 256  # nesting of the JSON body; real plans stay far below
ISOLATION_LEVELS = frozenset(
    {"READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SNAPSHOT", "SERIALIZABLE"}
)
# the companion's id (Prisma's TransactionManager: a UUID), with --advertise-url behind
# the worker and replica holding it, as poolgate's own transaction ids name theirs
TRANSACTION_ID = re.compile(r"^(?:([0-9]{1,3})\.([0-9a-f]{12})\.)?([A-Za-z0-9_-]{1,128})$")


class InvalidRequest(GatewayError):
    """400 P6005: a body, header or parameter Accelerate would refuse."""

    status = 400
    code = "P6005"


class UnsupportedClient(GatewayError):
    """400 P6006: a client version whose plans this gateway cannot interpret."""

    status = 400
    code = "P6006"


def check_client_version(headers: Mapping[str, str]) -> None:
    version = headers.get("Prisma-Engine-Hash", "").strip()
    if version not in SUPPORTED_CLIENTS:
        said = f"version {version!r}" if version else "no version (Prisma-Engine-Hash)"
        raise UnsupportedClient(
            f"this gateway runs query plans of Prisma clients {', '.join(SUPPORTED_CLIENTS)};"
            f" the client sent {said}: generate the client with one of those versions"
        )


def json_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, its nesting bounded before it is parsed."""
    if _nesting(body) > MAX_PLAN_DEPTH:
        raise InvalidRequest(f"the request body nests deeper than {MAX_PLAN_DEPTH} levels")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if SURROGATE_ESCAPE.search(body):
        _require_text(value)
    return value


def _require_text(value: Any) -> None:
    """InvalidText (22021) for a string holding a lone surrogate, anywhere in the body: the
    companion would send it on as U+FFFD, a value the client never wrote."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidText("a string of the request") from None
        elif isinstance(node, dict):
            stack.extend(node)  # the keys
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(ch for ch in range(256) if ch not in b"[]{}")


def _nesting(body: bytes) -> int:
    """The deepest nesting of arrays and objects (strings skipped), without recursion."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for ch in brackets:
        if ch in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


@dataclass(frozen=True, slots=True)
class QueryPlan:
    plan: dict[str, Any]
    params: dict[str, Any]

    def statements(self) -> Iterator[str]:
        """The SQL of every database query in the plan (a template's parameters as ?)."""
        stack: list[Any] = [self.plan]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                kind = node.get("type")
                if kind == "rawSql" and isinstance(node.get("sql"), str):
                    yield node["sql"]
                elif kind == "templateSql" and isinstance(node.get("fragments"), list):
                    yield " ? ".join(
                        fragment["chunk"]
                        for fragment in node["fragments"]
                        if isinstance(fragment, dict) and isinstance(fragment.get("chunk"), str)
                    )
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    def canonical(self) -> str:
        return json.dumps([self.plan, self.params], sort_keys=True, separators=(",", ":"))


def query_plan(payload: dict[str, Any]) -> QueryPlan:
    """`{model?, operation, plan, params, comments?}`, as Prisma's own server takes it."""
    plan, params = payload.get("plan"), payload.get("params")
    if not isinstance(payload.get("operation"), str) or not payload["operation"]:
        raise InvalidRequest('"operation" must be a non-empty string')
    if "model" in payload and not isinstance(payload["model"], str):
        raise InvalidRequest('"model" must be a string')
    if not isinstance(plan, dict) or not isinstance(params, dict):
        raise InvalidRequest('"plan" and "params" must be JSON objects')
    comments = payload.get("comments")
    if comments is not None and not (
        isinstance(comments, dict) and all(isinstance(v, str) for v in comments.values())
    ):
        raise InvalidRequest('"comments" must map names to strings')
    return QueryPlan(plan, params)


@dataclass(frozen=True, slots=True)
class TransactionId:
    companion: str  # the id the companion knows it by
    replica: str | None = None  # with --advertise-url: the replica holding it
    worker: int = 0  # and the worker of that replica that registered it

    def __str__(self) -> str:
        if self.replica is None:
            return self.companion
        return f"{self.worker}.{self.replica}.{self.companion}"


def transaction_id(text: str) -> TransactionId | None:
    match = TRANSACTION_ID.match(text)
    if match is None:
        return None
    worker, replica, companion = match.groups()
    return TransactionId(companion, replica, int(worker or 0))


def transaction_options(payload: dict[str, Any]) -> None:
    """`{timeout?, maxWait?, isolationLevel?, newTxId?}`: checked, passed on as sent."""
    for name in ("timeout", "maxWait"):
        value = payload.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise InvalidRequest(f'"{name}" must be a number of milliseconds')
    level = payload.get("isolationLevel")
    if level is not None and level not in ISOLATION_LEVELS:
        raise InvalidRequest(
            f'"isolationLevel" must be one of {", ".join(sorted(ISOLATION_LEVELS))}'
        )
    new_id = payload.get("newTxId")
    if new_id is not None and not (isinstance(new_id, str) and TRANSACTION_ID.match(new_id)):
        raise InvalidRequest('"newTxId" must be a transaction id')


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """`cache-control: max-age=TTL, stale-while-revalidate=SWR` and `accelerate-cache-tags`."""

    ttl: int = 0
    swr: int = 0
    tags: tuple[str, ...] = ()

    @property
    def wanted(self) -> bool:
        return self.ttl > 0 or self.swr > 0


def cache_request(headers: Mapping[str, str]) -> CacheRequest:
    ttl = swr = 0
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("max-age", "stale-while-revalidate"):
            text = value.strip()
            if not text.isascii() or not text.isdigit() or len(text) > 12:
                raise InvalidRequest(f"cache-control: {name} must be a whole number of seconds")
            seconds = min(int(text), cache_policy.MAX_SECONDS)
            ttl, swr = (seconds, swr) if name == "max-age" else (ttl, seconds)
    tags = tuple(
        dict.fromkeys(t.strip() for t in headers.get("accelerate-cache-tags", "").split(","))
    )
    return CacheRequest(ttl, swr, checked_tags([t for t in tags if t], "accelerate-cache-tags"))


def checked_tags(tags: list[str], where: str) -> tuple[str, ...]:
    """The cache's own rules for tags (cache_policy), answered as Accelerate's P6005."""
    try:
        return cache_policy.checked_tags(tags, where)
    except BadRequest as refused:
        raise InvalidRequest(refused.message) from None


def invalidation_tags(payload: dict[str, Any]) -> tuple[str, ...] | None:
    """`{"tags": [...]}`, or None for `{"tags": "all"}` (invalidateAll)."""
    tags = payload.get("tags")
    if tags == "all":
        return None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidRequest('"tags" must be a list of tag strings, or "all"')
    return checked_tags(tags, "tags")


# Prisma's SQL names every table "schema"."table"; raw SQL may not quote it.
_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_TABLE = rf"({_NAME}(?:\s*\.\s*{_NAME})?)"
_READ = re.compile(rf"\b(?:FROM|JOIN)\s+{_TABLE}", re.IGNORECASE)
_WRITTEN = re.compile(rf"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO)\s+{_TABLE}", re.I)
_QUOTED = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'')
_WRITE_WORDS = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE|CREATE|ALTER|DROP|COPY|CALL|DO|GRANT|REVOKE"
    r"|COMMENT|REFRESH|VACUUM|CLUSTER|REINDEX|LOCK|NOTIFY|SELECT\s+[^;]*\bINTO)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class TablesTouched:
    read: frozenset[str]
    written: frozenset[str]
    writes: bool  # a statement may write (then `written` may not name every table)
    unnamed_write: bool  # a write whose table could not be read off its SQL


def tables_touched(plan: QueryPlan) -> TablesTouched:
    read: set[str] = set()
    written: set[str] = set()
    writes = unnamed = False
    for sql in plan.statements():
        read.update(_canonical(name) for name in _READ.findall(sql))
        if _WRITE_WORDS.search(_QUOTED.sub(" ", sql)):
            writes = True
            named = {_canonical(name) for name in _WRITTEN.findall(sql)}
            written |= named
            unnamed |= not named
    return TablesTouched(frozenset(read), frozenset(written), writes, unnamed)


def _canonical(name: str) -> str:
    """`"public"."Post"`, `public.post` and `post` as one spelling: unquoted names fold
    to lower case, as Postgres folds them; a name without a schema is public's."""
    parts = [
        p.strip()[1:-1].replace('""', '"') if p.strip().startswith('"') else p.strip().lower()
        for p in re.findall(rf"{_NAME}", name)
    ]
    return ".".join(parts if len(parts) == 2 else ["public", *parts])
