"""Answering `POST /sql` and `POST /invalidate`: parse, authenticate, consult the cache,
run upstream on a pooled connection, invalidate after a write commits.

Every call takes the request's `deadline` (event-loop time: its arrival plus
`Settings.request_deadline`): the wait for a connection, connecting and running all end
by then (503 if nothing was sent upstream yet, 504 if it was).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from poolgate.config import Settings
from poolgate.core.cache import QueryCache
from poolgate.core.cache_policy import (
    CachePolicy,
    cache_key,
    parse_cache_policy,
    parse_tags,
    scoped_tags,
)
from poolgate.core.cache_stores import CacheUnavailable
from poolgate.core.errors import BadRequest, OutcomeUnknown, QueryFailed, Unavailable
from poolgate.core.execute import Outcome, run_request
from poolgate.core.pool import PoolRegistry
from poolgate.core.requests import Credentials, SqlRequest
from poolgate.core.session_state import may_change_session
from poolgate.core.transactions import Transactions, begin_options
from poolgate.faces.neon_http.hit_lane import CacheRead, HitLane
from poolgate.faces.neon_http.protocol import (
    TRANSACTION_HEADER,
    batch_options,
    json_object,
    parse_sql_request,
    request_credentials,
)

READ_ONLY_VIOLATION = "25006"


@dataclass(frozen=True, slots=True)
class SqlAnswer:
    outcome: Outcome
    cache_status: str  # ttl | swr | miss | none, as Accelerate reports it
    age: int | None  # seconds since produced, for answers that are in the cache
    invalidation_failed: bool = False  # the write committed; its tags could not be dropped


class SqlService:
    def __init__(
        self,
        settings: Settings,
        pools: PoolRegistry,
        cache: QueryCache | None,
        transactions: Transactions | None = None,
        in_process_cache: bool = False,
    ) -> None:
        """`in_process_cache`: the cache's store is this process's memory, so a hit
        costs no round trip and the hit lane answers known requests' fresh hits."""
        self._settings = settings
        self._pools = pools
        self.cache = cache
        self.transactions = transactions or Transactions(settings, pools)
        self.hits: HitLane | None = None
        if cache is not None and in_process_cache:
            self.hits = HitLane(bearer_is_password=not settings.api_keys)

    def deadline(self) -> float:
        """The deadline of a request arriving now."""
        return asyncio.get_running_loop().time() + self._settings.request_deadline

    async def answer(
        self,
        headers: Mapping[str, str],
        body: bytes,
        client: str = "unknown",
        deadline: float | None = None,
    ) -> SqlAnswer:
        """`client`: the peer's address, which failed logins are throttled by."""
        deadline = self.deadline() if deadline is None else deadline
        policy = parse_cache_policy(headers)
        cache, lane = self.cache, self.hits
        digest = None if lane is None else lane.digest(headers, body)
        known = None if lane is None or digest is None else lane.recall(digest, headers)
        if known is not None and cache is not None and policy.wants_cache:
            try:  # parsed only if the cache has to ask upstream
                return await self._from_cache(
                    cache, known, policy, lambda: self._parse(headers, body), client, deadline
                )
            except QueryFailed as error:
                if error.sqlstate != READ_ONLY_VIOLATION:
                    raise  # else the full path decides, as for a request it has not seen
        request = self._parse(headers, body)
        transaction_id = headers.get(TRANSACTION_HEADER)
        if transaction_id is not None:
            if policy.wants_cache or policy.invalidate or "Poolgate-Cache-Tags" in headers:
                raise BadRequest(
                    "cache headers are refused inside a transaction: send"
                    " Poolgate-Invalidate-Tags with its commit"
                )
            outcome = await self.transactions.run(
                transaction_id, request.credentials, request, deadline
            )
            return SqlAnswer(outcome, "none", None)
        answer = None
        if cache is not None and policy.wants_cache and _read_only(request):
            read = CacheRead(
                request.credentials,
                cache_key(request, policy.tags),
                _scoped(request.credentials, policy.tags),
            )
            try:
                answer = await self._from_cache(
                    cache, read, policy, lambda: request, client, deadline
                )
                if lane is not None and digest is not None and not lane.knows(digest):
                    lane.learn(digest, headers, read)  # answered through the cache
            except QueryFailed as error:
                # a write sent with a TTL: it failed harmlessly inside READ ONLY, so it is
                # run for real below, uncached
                if error.sqlstate != READ_ONLY_VIOLATION or request.batch is not None:
                    raise
        if answer is None:
            answer = SqlAnswer(await self._run(request, False, client, deadline), "none", None)
        # only reached once the statement (or the whole batch) has committed
        if not await self._drop_after_commit(request.credentials, policy.invalidate):
            return replace(answer, invalidation_failed=True)
        return answer

    async def begin(
        self,
        headers: Mapping[str, str],
        body: bytes,
        client: str = "unknown",
        deadline: float | None = None,
    ) -> dict[str, str]:
        """`POST /transaction`: a transaction opened on a reserved connection."""
        credentials = self._credentials(headers)
        payload = json_object(body) if body.strip() else {}
        options = begin_options(batch_options(headers), payload, self._settings)
        deadline = self.deadline() if deadline is None else deadline
        return await self.transactions.begin(credentials, options, client, deadline)

    async def commit(
        self, transaction_id: str, headers: Mapping[str, str], deadline: float | None = None
    ) -> bool:
        """`POST /transaction/<id>/commit`; then `Poolgate-Invalidate-Tags` are dropped.
        False if the commit happened but the tags could not be dropped."""
        credentials = self._credentials(headers)
        tags = parse_cache_policy(headers).invalidate
        deadline = self.deadline() if deadline is None else deadline
        await self.transactions.commit(transaction_id, credentials, deadline)
        return await self._drop_after_commit(credentials, tags)

    async def _drop_after_commit(self, credentials: Credentials, tags: tuple[str, ...]) -> bool:
        """Drop a committed write's tags; False if the cache store could not be reached
        (reported, never an error: the write stands, and the client must not retry it)."""
        if not tags or self.cache is None:
            return True
        try:
            await self.cache.invalidate(_scoped(credentials, tags))
        except CacheUnavailable:
            return False
        return True

    async def rollback(
        self, transaction_id: str, headers: Mapping[str, str], deadline: float | None = None
    ) -> None:
        deadline = self.deadline() if deadline is None else deadline
        await self.transactions.rollback(transaction_id, self._credentials(headers), deadline)

    def _credentials(self, headers: Mapping[str, str]) -> Credentials:
        return request_credentials(headers, bearer_is_password=not self._settings.api_keys)

    async def invalidate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        client: str = "unknown",
        deadline: float | None = None,
    ) -> int:
        credentials = self._credentials(headers)
        tags = parse_tags(json_object(body).get("tags"), "tags")
        deadline = self.deadline() if deadline is None else deadline
        await self._pools.authenticate(credentials, client, deadline)
        if self.cache is None:
            return 0
        try:
            return await self.cache.invalidate(_scoped(credentials, tags))
        except CacheUnavailable:
            raise Unavailable("the cache store is unreachable; nothing was invalidated") from None

    async def _from_cache(
        self,
        cache: QueryCache,
        read: CacheRead,
        policy: CachePolicy,
        request: Callable[[], SqlRequest],
        client: str,
        deadline: float,
    ) -> SqlAnswer:
        """`request`: the parsed request, asked for only if upstream must answer."""
        # a hit needs a login
        await self._pools.authenticate(read.credentials, client, deadline)
        cached = await cache.answer(
            read.key,
            policy,
            read.scoped_tags,
            lambda: self._run(request(), True, client, deadline),
        )
        return SqlAnswer(cached.outcome, cached.status, cached.age)

    def _parse(self, headers: Mapping[str, str], body: bytes) -> SqlRequest:
        return parse_sql_request(headers, body, bearer_is_password=not self._settings.api_keys)

    async def _run(
        self, request: SqlRequest, read_only: bool, client: str, deadline: float
    ) -> Outcome:
        """Run on a pooled connection within the request's deadline (from its arrival,
        the statement timeout plus a second): past it the answer is 504 and the
        connection is discarded."""
        reset = any(may_change_session(statement.query) for statement in request.statements)
        credentials = request.credentials
        async with self._pools.connection(credentials, client, reset, deadline) as connection:
            try:
                async with asyncio.timeout_at(deadline):
                    return await run_request(
                        connection, request, self._settings.max_response_bytes, read_only
                    )
            except TimeoutError:
                raise OutcomeUnknown(
                    f"the database did not answer within {self._settings.request_deadline:g} s"
                    " of the request's arrival: whether the request took effect is unknown"
                ) from None


def _read_only(request: SqlRequest) -> bool:
    """Single queries are run READ ONLY when cached; a batch must ask for it itself."""
    return request.batch is None or request.batch.read_only


def _scoped(credentials: Credentials, tags: tuple[str, ...]) -> tuple[str, ...]:
    return scoped_tags(credentials.user, credentials.database, tags)
