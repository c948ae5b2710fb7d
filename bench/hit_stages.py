"""Where a cache hit's time goes, stage by stage, timed in-process (issue 23).

    uv run python bench/hit_stages.py [--rounds 20000]

One embedded PostgreSQL with the bench's table; a gateway (`Gateway`, this process, no
HTTP server) whose cache holds the bench's lookup and whose pool trusts the password
(one real request first). Then each stage of a hit (the calls `Gateway.handle` makes for
it, in its order, on the same objects) is run `--rounds` times on its own and timed with
`perf_counter_ns`; the last row is `Gateway.handle` itself on a mocked aiohttp request
(everything of ours, none of aiohttp's parsing or response write: see
`bench/hit_path.py` for those, measured as CPU per request under wrk). Median of 5
repetitions of each stage, in microseconds; the stages add up to about the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import uvloop  # noqa: E402
from aiohttp import streams  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402
from multidict import CIMultiDict  # noqa: E402
from poolgate.config import parse_settings  # noqa: E402
from poolgate.core import cache_policy, request_log  # noqa: E402
from poolgate.faces.accelerate.face import claims  # noqa: E402
from poolgate.faces.neon_http import app, protocol, sql_service  # noqa: E402
from poolgate.faces.neon_ws.upgrade import is_session_request  # noqa: E402

from devstack.migrate import apply_schema  # noqa: E402
from tests.support.services import (  # noqa: E402
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    make_app_url,
    start_postgres,
)

QUERY = "SELECT id, name, email FROM users WHERE id = $1"
BODY = b'{"query":"' + QUERY.encode() + b'","params":[42]}'


class _Null:
    def write(self, text: str) -> int:
        return len(text)


def headers() -> CIMultiDict[str]:
    """What wrk sends (bench/wrk_scripts.py) with a TTL, as aiohttp's parser gives them."""
    return CIMultiDict(
        {
            "Host": "127.0.0.1:8080",
            "Content-Type": "application/json",
            "Content-Length": str(len(BODY)),
            "Neon-Connection-String": make_app_url(),
            "Neon-Raw-Text-Output": "true",
            "Neon-Array-Mode": "true",
            "Poolgate-Cache-TTL": "600",
        }
    )


class _Protocol:
    _reading_paused = False

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass

    def pause_reading(self) -> None:
        pass


def body_stream(loop: asyncio.AbstractEventLoop) -> streams.StreamReader:
    payload = streams.StreamReader(_Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
    payload.feed_data(BODY)
    payload.feed_eof()
    return payload


def mocked_request(loop: asyncio.AbstractEventLoop) -> Any:
    """One request (aiohttp's own mock, slow to make), whose body is renewed per use."""
    request = make_mocked_request("POST", "/sql", headers=headers(), payload=body_stream(loop))
    request.__dict__["remote"] = "127.0.0.1"  # reify's cache: no mocked transport asked
    return request


def again(request: Any, loop: asyncio.AbstractEventLoop) -> Any:
    request._payload = request._cache["content"] = body_stream(loop)  # `content` is reified
    return request


def timed(rounds: int, call: Callable[[], object]) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(rounds):
            call()
        samples.append((time.perf_counter_ns() - started) / rounds / 1000)
    return statistics.median(samples)


async def atimed(rounds: int, call: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(rounds):
            await call()
        samples.append((time.perf_counter_ns() - started) / rounds / 1000)
    return statistics.median(samples)


async def measure(upstream: str, rounds: int) -> list[tuple[str, float]]:
    settings = parse_settings(["--upstream", upstream, "--pool-size", "2"])
    gateway = app.Gateway(settings)
    await gateway.start()
    app.REQUEST_LOG.stream = _Null()  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    try:
        first = await gateway.handle(mocked_request(loop))
        assert first.status == 200, first
        hit = await gateway.handle(mocked_request(loop))
        assert hit.headers["Poolgate-Cache-Status"] == "ttl", hit.headers
        service = gateway.service
        cache = service.cache
        assert cache is not None
        request = mocked_request(loop)
        sent = request.headers
        policy = cache_policy.parse_cache_policy(sent)
        parsed = protocol.parse_sql_request(sent, BODY)
        key = cache_policy.cache_key(parsed, policy.tags)
        scoped = sql_service._scoped(parsed.credentials, policy.tags)
        answer = await service.answer(sent, BODY, "127.0.0.1", loop.time() + 10)
        response = app._sql_response(answer)
        store = cache.store
        results: list[tuple[str, float]] = []

        def row(name: str, micros: float) -> None:
            results.append((name, micros))
            print(f"{micros:8.2f} us  {name}", flush=True)

        row("request id (new_request_id)", timed(rounds, app.new_request_id))
        row(
            "routing (session?, accelerate?, transaction?, route, method)",
            timed(
                rounds,
                lambda: (
                    is_session_request(request, app._HTTP_PATHS),
                    claims(request, False),
                    app._is_transaction_call(request),
                    app._ROUTES.get(request.path),
                    request.method,
                ),
            ),
        )
        row(
            "API key check and body read (_read_body, a body that came with the head)",
            await atimed(
                rounds,
                lambda: app._read_body(settings, again(request, loop), loop.time() + 10),
            ),
        )
        row(
            "  of which a new body stream (the bench's, not the gateway's)",
            timed(rounds, lambda: again(request, loop)),
        )
        row(
            "cache headers (parse_cache_policy)",
            timed(rounds, lambda: cache_policy.parse_cache_policy(sent)),
        )
        row(
            "credentials (request_credentials: urlsplit, unquote, checks)",
            timed(rounds, lambda: protocol.request_credentials(sent, True)),
        )
        row("body JSON (json_object)", timed(rounds, lambda: protocol.json_object(BODY)))
        row(
            "whole request parse (parse_sql_request)",
            timed(rounds, lambda: protocol.parse_sql_request(sent, BODY)),
        )
        row(
            "authentication (PoolRegistry.authenticate, trusted password)",
            await atimed(
                rounds,
                lambda: service._pools.authenticate(
                    parsed.credentials, "127.0.0.1", loop.time() + 10
                ),
            ),
        )
        row(
            "cache key (cache_key: json.dumps + sha256)",
            timed(rounds, lambda: cache_policy.cache_key(parsed, policy.tags)),
        )
        row(
            "scoped tags (_scoped)",
            timed(rounds, lambda: sql_service._scoped(parsed.credentials, policy.tags)),
        )
        row(
            "store lookup (MemoryStore.lookup)",
            await atimed(rounds, lambda: store.lookup(key, scoped)),
        )

        async def never() -> Any:
            raise AssertionError("a hit never runs upstream")

        row(
            "cache answer (QueryCache.answer: lookup, age, counters)",
            await atimed(rounds, lambda: cache.answer(key, policy, scoped, never)),
        )
        row(
            "SqlService.answer, whole (parse .. cache answer)",
            await atimed(rounds, lambda: service.answer(sent, BODY, "127.0.0.1", loop.time() + 10)),
        )
        row("response object (_sql_response)", timed(rounds, lambda: app._sql_response(answer)))

        def finish() -> None:
            headers_ = response.headers
            headers_["Neon-Request-Id"] = "x"
            headers_.setdefault("Poolgate-Cache-Status", "none")
            headers_.setdefault("Access-Control-Allow-Origin", "*")

        row("response headers set in handle", timed(rounds, finish))
        row(
            "metrics (Metrics.observe)",
            timed(rounds, lambda: gateway.metrics.observe("ok", 0.0002, None)),
        )
        log = app.REQUEST_LOG

        def log_line() -> None:
            log.request("0" * 36, "POST", "/sql", 200, "ok", 0.123, 1, None)
            log._lines.clear()

        row("request log line (RequestLog.request, formatting)", timed(rounds, log_line))
        flusher = request_log.RequestLog(_Null())  # type: ignore[arg-type]

        def flush_one() -> None:
            flusher._lines.append("x" * 200)
            flusher.flush()

        row("  its write (RequestLog.flush of one line to a null stream)", timed(rounds, flush_one))
        hits = gateway.service.hits
        if hits is not None:  # the hit lane (hit_lane.HitLane): what it does instead of the parse
            row(
                "hit lane: digest of the request (HitLane.digest)",
                timed(rounds, lambda: hits.digest(sent, BODY)),
            )
            digest = hits.digest(sent, BODY)
            assert digest is not None and hits.knows(digest)
            row(
                "hit lane: recall (the known request, with this one's password)",
                timed(rounds, lambda: hits.recall(digest, sent)),
            )
        row(
            "Gateway.handle, whole (mocked request; no aiohttp parse or write)",
            await atimed(rounds, lambda: gateway.handle(again(request, loop))),
        )
        answered = await gateway.handle(again(request, loop))
        assert answered.headers["Poolgate-Cache-Status"] == "ttl", answered.headers
        gateway.service.hits = None
        answered = await gateway.handle(again(request, loop))
        assert answered.headers["Poolgate-Cache-Status"] == "ttl", answered.headers
        row(
            "Gateway.handle, whole, without the hit lane",
            await atimed(rounds, lambda: gateway.handle(again(request, loop))),
        )
        return results
    finally:
        await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20_000)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-hit-"))
    postgres = start_postgres(folder / "pg")
    try:
        apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
        with postgres.admin(APP_DATABASE) as conn:
            conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
            conn.execute(
                "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'user ' || g"
                " FROM generate_series(1, 100) g"
            )
        uvloop.run(measure(postgres.upstream_url, options.rounds))
    finally:
        postgres.stop()


if __name__ == "__main__":
    main()
