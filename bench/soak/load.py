"""The soak's load: a few clients on loopback, each a loop of one kind of request with
a short pause between requests, every answer judged against what that request may be
answered. Anything else is *unexpected* and fails the verdict.

- cached read, `GET /posts?published=true` (the gateway caches it in Redis): 200;
- uncached read, `GET /users/{id}` of a seeded user: 200;
- keyed write, `POST /users` (a unique email) with its own `Idempotency-Key`, sent
  again until it is acknowledged: 201; what a careful client retries after is
  expected too (`retried`: 503, 504, 409 `idempotency_key_in_use`, no answer);
- transfer, `POST /posts/{id}/transfer` between two users (an interactive
  transaction): 200, or 409 `conflict` when the target has its 5 drafts already;
- metrics scrape, the gateway's `GET /metrics` with its API key: 200;
- hostile, each of `HOSTILE` in turn: exactly that row's status (and, from the Worker,
  its error code).

The first interval opens with a *burst*: `BURST_ROUNDS` rounds of `BURST_WIDTH` reads
through the Worker at once, several times the clients' steady concurrency, and a
*pool fill*: 4 x --pool-size `SELECT pg_sleep(0.2)` sent straight to the gateway at
once, each on its own connection (with SO_REUSEPORT spreading them, every gateway
worker holds its whole share of the pool for a moment; a 10-minute run without it met
its 10th connection only in the second minute). So every pool on the way (the
Worker's fetch sockets, each gateway worker's Postgres and Redis connections) opens as
many connections as the steady load could ever want while the baseline is measured,
and a count that later rises above the first interval's is growth, not a pool meeting
a new peak of concurrency. The pool fill is expected to answer 200.

Each client stops at the end of the run or after `bound` requests, whichever is first;
a keyed write under way is finished (bounded by `WRITE_ATTEMPTS`), so every write that
was started is either acknowledged or counted as given up.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import aiohttp

from bench.soak.stack import Stack
from tests.support.services import make_app_url

WRITE_ATTEMPTS = 100
RETRY_PAUSE = 0.05  # seconds between attempts of one keyed write
REQUEST_TIMEOUT = 30.0  # seconds; past it the request counts as "no answer" (status 0)
NO_ANSWER = 0
BURST_WIDTH = 24  # reads at once: half cached, half uncached
BURST_ROUNDS = 3


class Kind(StrEnum):
    CACHED_READ = "cached read"
    UNCACHED_READ = "uncached read"
    KEYED_WRITE = "keyed write"
    TRANSFER = "transfer"
    METRICS = "metrics scrape"
    HOSTILE = "hostile"
    POOL_FILL = "pool fill"


@dataclass(frozen=True)
class Hostile:
    """A request the stack must refuse, and exactly how."""

    name: str
    target: Literal["worker", "gateway"]
    method: str
    path: str
    status: int
    code: str | None = None  # the Worker's error code in its JSON body
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


JSON = {"content-type": "application/json"}
HOSTILE: tuple[Hostile, ...] = (
    Hostile("bad JSON", "worker", "POST", "/users", 400, "malformed_json", JSON, b'{"email": '),
    Hostile(
        "headers over 32 KiB",
        "worker",
        "GET",
        "/users/1",
        431,
        "headers_too_large",
        {"x-soak-padding": "x" * 40_000},
    ),
    Hostile("URL over 8 KiB", "worker", "GET", "/users?padding=" + "x" * 9000, 414, "uri_too_long"),
    Hostile("unknown route", "worker", "GET", "/no-such-route", 404, "not_found"),
    Hostile("method no route has", "worker", "PUT", "/users", 405, "method_not_allowed"),
    Hostile(
        "not JSON",
        "worker",
        "POST",
        "/users",
        415,
        "unsupported_media_type",
        {"content-type": "text/plain"},
        b"{}",
    ),
    Hostile(
        "body over 1 MiB",
        "worker",
        "POST",
        "/logs",
        413,
        "payload_too_large",
        JSON,
        b'{"message": "' + b"x" * (1024 * 1024) + b'"}',
    ),
    Hostile("gateway without its API key", "gateway", "POST", "/sql", 401, body=b"{}"),
    Hostile("gateway, bad JSON", "gateway", "POST", "/sql", 400, body=b'{"query": '),
)


@dataclass
class Tally:
    """What happened in one interval (or, merged, in the whole run)."""

    statuses: Counter[tuple[Kind, int]] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    unexpected: Counter[str] = field(default_factory=Counter)  # "kind: sent -> got"
    cache_statuses: Counter[str] = field(default_factory=Counter)  # of the cached reads

    def merge(self, other: Tally) -> None:
        self.statuses.update(other.statuses)
        self.seconds += other.seconds
        self.unexpected.update(other.unexpected)
        self.cache_statuses.update(other.cache_statuses)

    def by_status(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        for (_, status), n in self.statuses.items():
            counts[status] += n
        return counts

    def of_kind(self, kind: Kind) -> int:
        return sum(n for (k, _), n in self.statuses.items() if k == kind)


class Recorder:
    def __init__(self) -> None:
        self.current = Tally()

    def record(self, kind: Kind, answer: Answer, unexpected: str | None) -> None:
        self.current.statuses[kind, answer.status] += 1
        self.current.seconds.append(answer.seconds)
        if unexpected is not None:
            self.current.unexpected[f"{kind}: {unexpected}"] += 1

    def cut(self) -> Tally:
        """The interval's tally so far; the next one starts empty."""
        tally, self.current = self.current, Tally()
        return tally


@dataclass(frozen=True)
class Answer:
    status: int  # NO_ANSWER when none came (refused, reset, timed out)
    body: bytes
    headers: Mapping[str, str]
    seconds: float

    def error_code(self) -> str | None:
        try:
            parsed: Any = json.loads(self.body)
            return str(parsed["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None

    def described(self) -> str:
        return f"{self.status} {self.body[:120]!r}"


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    started = time.perf_counter()
    try:
        async with session.request(method, url, headers=headers, data=body) as response:
            content = await response.read()
            return Answer(
                response.status,
                content,
                {k.lower(): v for k, v in response.headers.items()},
                time.perf_counter() - started,
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(NO_ANSWER, repr(exc).encode(), {}, time.perf_counter() - started)


@dataclass
class Writes:
    """The keyed writes' outcomes: key -> id of each acknowledged one (its email is
    `email_of(key)`)."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    given_up: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mix:
    """How many clients of each kind, and the pause between one client's requests."""

    cached_readers: int = 2
    uncached_readers: int = 2
    writers: int = 2
    transferrers: int = 1
    pause: float = 0.01
    metrics_every: float = 1.0  # seconds between scrapes
    hostile_every: float = 0.3  # seconds between hostile requests (about 3 a second)


class Load:
    def __init__(self, stack: Stack, mix: Mix, recorder: Recorder) -> None:
        self.stack, self.mix, self.recorder = stack, mix, recorder
        self.worker = stack.worker.url
        self.gateway = stack.gateway.url
        self.writes = Writes()
        self.stopping = asyncio.Event()

    async def run(self, bound: int) -> None:
        """Every client until `stopping` is set (or each has sent `bound` requests)."""
        loops: list[Callable[[aiohttp.ClientSession, int, int], Awaitable[None]]] = [
            *[self.cached_reads] * self.mix.cached_readers,
            *[self.uncached_reads] * self.mix.uncached_readers,
            *[self.keyed_writes] * self.mix.writers,
            *[self.transfers] * self.mix.transferrers,
            self.metrics_scrapes,
            self.hostile_requests,
        ]
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self.burst(session)
            await self.fill_the_pool(session)

        async def client(
            number: int, loop: Callable[[aiohttp.ClientSession, int, int], Awaitable[None]]
        ) -> None:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await loop(session, number, bound)

        await asyncio.gather(*(client(n, loop) for n, loop in enumerate(loops)))

    async def burst(self, session: aiohttp.ClientSession) -> None:
        for _round in range(BURST_ROUNDS):
            half = BURST_WIDTH // 2
            readers = self.stack.seed.readers
            answers = await asyncio.gather(
                *(send(session, "GET", f"{self.worker}/posts?published=true") for _ in range(half)),
                *(
                    send(session, "GET", f"{self.worker}/users/{readers[n % len(readers)]}")
                    for n in range(half)
                ),
            )
            for n, answer in enumerate(answers):
                kind = Kind.CACHED_READ if n < half else Kind.UNCACHED_READ
                self.judge(kind, answer, answer.status == 200, "burst")

    async def fill_the_pool(self, session: aiohttp.ClientSession) -> None:
        headers = {**self.stack.gateway_headers, "neon-connection-string": make_app_url()}
        body = json.dumps({"query": "SELECT pg_sleep(0.2)"}).encode()
        answers = await asyncio.gather(
            *(
                send(session, "POST", f"{self.gateway}/sql", headers=headers, body=body)
                for _ in range(4 * self.stack.pool_size)
            )
        )
        for answer in answers:
            self.judge(Kind.POOL_FILL, answer, answer.status == 200)

    def running(self, sent: int, bound: int) -> bool:
        return not self.stopping.is_set() and sent < bound

    async def cached_reads(self, session: aiohttp.ClientSession, _: int, bound: int) -> None:
        for _sent in range(bound):
            if self.stopping.is_set():
                return
            answer = await send(session, "GET", f"{self.worker}/posts?published=true")
            self.judge(Kind.CACHED_READ, answer, answer.status == 200)
            self.recorder.current.cache_statuses[answer.headers.get("x-cache-status", "-")] += 1
            await asyncio.sleep(self.mix.pause)

    async def uncached_reads(self, session: aiohttp.ClientSession, n: int, bound: int) -> None:
        pick = random.Random(n)
        for _sent in range(bound):
            if self.stopping.is_set():
                return
            user = pick.choice(self.stack.seed.readers)
            answer = await send(session, "GET", f"{self.worker}/users/{user}")
            self.judge(Kind.UNCACHED_READ, answer, answer.status == 200)
            await asyncio.sleep(self.mix.pause)

    async def keyed_writes(self, session: aiohttp.ClientSession, n: int, bound: int) -> None:
        sent = 0
        for count in range(bound):
            if not self.running(sent, bound):
                return
            key = f"soak-{n}-{count}"
            body = json.dumps({"email": email_of(key), "name": key}).encode()
            headers = {**JSON, "idempotency-key": key}
            for _attempt in range(WRITE_ATTEMPTS):
                answer = await send(
                    session, "POST", f"{self.worker}/users", headers=headers, body=body
                )
                sent += 1
                if answer.status == 201:
                    self.judge(Kind.KEYED_WRITE, answer, True)
                    self.writes.acknowledged[key] = int(json.loads(answer.body)["id"])
                    break
                self.judge(Kind.KEYED_WRITE, answer, retried(answer))
                await asyncio.sleep(RETRY_PAUSE)
            else:
                self.writes.given_up.append(key)
            await asyncio.sleep(self.mix.pause)

    async def transfers(self, session: aiohttp.ClientSession, n: int, bound: int) -> None:
        pick = random.Random(n)
        for _sent in range(bound):
            if self.stopping.is_set():
                return
            post = pick.choice(self.stack.seed.movable)
            body = json.dumps({"to_user_id": pick.choice(self.stack.seed.movers)}).encode()
            answer = await send(
                session, "POST", f"{self.worker}/posts/{post}/transfer", headers=JSON, body=body
            )
            refused = answer.status == 409 and answer.error_code() == "conflict"
            self.judge(Kind.TRANSFER, answer, answer.status == 200 or refused)
            await asyncio.sleep(self.mix.pause)

    async def metrics_scrapes(self, session: aiohttp.ClientSession, _: int, bound: int) -> None:
        for _sent in range(bound):
            if self.stopping.is_set():
                return
            answer = await send(
                session, "GET", f"{self.gateway}/metrics", headers=self.stack.gateway_headers
            )
            self.judge(Kind.METRICS, answer, answer.status == 200)
            await asyncio.sleep(self.mix.metrics_every)

    async def hostile_requests(self, session: aiohttp.ClientSession, _: int, bound: int) -> None:
        gateway_headers = {**self.stack.gateway_headers, "neon-connection-string": make_app_url()}
        for sent in range(bound):
            if self.stopping.is_set():
                return
            hostile = HOSTILE[sent % len(HOSTILE)]
            if hostile.target == "worker":
                url, headers = f"{self.worker}{hostile.path}", dict(hostile.headers)
            else:
                with_key = hostile.status != 401
                url = f"{self.gateway}{hostile.path}"
                headers = {**(gateway_headers if with_key else {}), **hostile.headers}
            answer = await send(session, hostile.method, url, headers=headers, body=hostile.body)
            as_expected = answer.status == hostile.status and (
                hostile.code is None or answer.error_code() == hostile.code
            )
            self.judge(Kind.HOSTILE, answer, as_expected, hostile.name)
            await asyncio.sleep(self.mix.hostile_every)

    def judge(self, kind: Kind, answer: Answer, expected: bool, what: str = "") -> None:
        problem = None if expected else f"{what} -> {answer.described()}".lstrip(" ")
        self.recorder.record(kind, answer, problem)


def email_of(key: str) -> str:
    """The unique value a keyed write stores: its key, as an email address."""
    return f"{key}@soak.example"


def retried(answer: Answer) -> bool:
    """An answer a careful client retries a keyed write after: the outcome may be unknown
    (504, no answer), the database was unavailable (503), or the first attempt with the
    key is still running (409 idempotency_key_in_use, after a 504 or a lost answer)."""
    if answer.status in (503, 504, NO_ANSWER):
        return True
    return answer.status == 409 and answer.error_code() == "idempotency_key_in_use"
