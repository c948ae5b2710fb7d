"""The Redis cache store: two gateway processes share entries and invalidations."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from poolgate.cache_stores import Entry, RedisStore

from tests.support.services import GatewayFactory, free_port, make_app_url


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is required (the README's test command installs it)"
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        ).stdout.strip()
        != "PONG"
    ):
        assert time.monotonic() < deadline and process.poll() is None, "redis did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def sql(gateway_url: str, body: Mapping[str, object], **headers: str) -> httpx.Response:
    sent = {
        "Neon-Connection-String": make_app_url(),
        "Neon-Array-Mode": "true",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return httpx.post(f"{gateway_url}/sql", json=body, headers=sent, timeout=30)


def test_two_gateways_share_entries_and_see_each_others_invalidations(
    gateways: GatewayFactory, redis_url: str
) -> None:
    first = gateways("--cache", redis_url)
    second = gateways("--cache", redis_url)
    read = {"query": "SELECT $1::text AS marker, now() AS at", "params": ["shared-redis"]}
    cached = {"Poolgate_Cache_TTL": "300", "Poolgate_Cache_Tags": "shared"}
    produced = sql(first.url, read, **cached)
    assert produced.headers["Poolgate-Cache-Status"] == "miss"
    served = sql(second.url, read, **cached)
    assert served.headers["Poolgate-Cache-Status"] == "ttl"
    assert served.json()["rows"] == produced.json()["rows"]
    write = sql(second.url, {"query": "SELECT 1"}, Poolgate_Invalidate_Tags="shared")
    assert write.status_code == 200
    after = sql(first.url, read, **cached)
    assert after.headers["Poolgate-Cache-Status"] == "miss"
    assert after.json()["rows"] != produced.json()["rows"]  # a new now()


async def test_a_redis_put_that_raced_an_invalidation_is_refused(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="poolgate-race-test")
    try:
        before = await store.versions(("items",))
        assert await store.invalidate(("items",)) == 0
        entry = Entry(b'{"rows":[]}', created=100.0, ttl=60, swr=10, tags=("items",), row_count=0)
        assert await store.put("k", entry, before, now=100.0) is False
        assert await store.get("k") is None
        assert await store.put("k", entry, await store.versions(("items",)), now=100.0)
        assert await store.get("k") == entry
        assert await store.invalidate(("items",)) == 1
        assert await store.get("k") is None
    finally:
        await store.close()
