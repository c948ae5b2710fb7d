"""The Redis cache store: two gateway processes share entries and invalidations."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx
from poolgate.core.cache_stores import Entry, RedisStore

from tests.support.services import GatewayFactory, make_app_url, start_redis


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


def test_with_redis_down_reads_bypass_the_cache_and_writes_report_failed_invalidation(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    url, redis = start_redis(tmp_path)
    gateway = gateways("--cache", url)
    read = {"query": "SELECT $1::text AS v", "params": ["redis-down"]}
    cached = {"Poolgate_Cache_TTL": "300", "Poolgate_Cache_Tags": "down"}
    assert sql(gateway.url, read, **cached).headers["Poolgate-Cache-Status"] == "miss"
    redis.terminate()
    redis.wait(timeout=10)
    # every Redis call gives up after 1 s, so none of these waits for the dead store: a
    # hang would fail on the client's own 30 s timeout, not on a measured bound
    bypassed = sql(gateway.url, read, **cached)
    assert bypassed.status_code == 200 and bypassed.json()["rows"] == [["redis-down"]]
    assert bypassed.headers["Poolgate-Cache-Status"] == "none"
    write = sql(gateway.url, {"query": "SELECT 1"}, Poolgate_Invalidate_Tags="down")
    assert write.status_code == 200
    assert write.headers["Poolgate-Invalidate-Status"] == "failed"
    refused = httpx.post(
        f"{gateway.url}/invalidate",
        json={"tags": ["down"]},
        headers={"Neon-Connection-String": make_app_url()},
    )
    assert refused.status_code == 503 and "nothing was invalidated" in refused.json()["message"]
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "poolgate_cache_store_errors_total 0.0" not in metrics
