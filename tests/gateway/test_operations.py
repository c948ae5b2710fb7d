"""Health, readiness, metrics and the per-request log line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from devstack.postgres import EmbeddedPostgres
from tests.support.services import Gateway, GatewayFactory, make_app_url
from tests.support.sql import post_sql


def test_healthz_answers_while_the_process_is_alive(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_200_with_a_reachable_upstream_and_503_without(
    gateway: Gateway, gateways: GatewayFactory, tmp_path: Path
) -> None:
    assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}
    orphan = gateways(upstream=f"postgresql:///?host={tmp_path}&port=5999")
    response = httpx.get(f"{orphan.url}/readyz")
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "not accepting connections" in response.json()["message"]


def test_metrics_report_requests_latency_pools_and_sqlstates(
    gateways: GatewayFactory, app_url: str
) -> None:
    fresh = gateways("--workers", "1")  # test_workers: the same, added up over workers
    post_sql(fresh.url, app_url, {"query": "SELECT 1/0"})  # its connection is discarded
    post_sql(fresh.url, app_url, {"query": "SELECT 1"})
    post_sql(fresh.url, app_url, {"query": "SELECT 1"})
    response = httpx.get(f"{fresh.url}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'poolgate_requests_total{outcome="ok"} 2.0' in lines
    assert 'poolgate_requests_total{outcome="query_failed"} 1.0' in lines
    assert 'poolgate_postgres_errors_total{sqlstate="22012"} 1.0' in lines
    assert 'poolgate_request_duration_seconds_count{outcome="ok"} 2.0' in lines
    assert 'poolgate_pool_connections{database="appdb",user="app"} 1.0' in lines
    assert 'poolgate_pool_in_use{database="appdb",user="app"} 0.0' in lines
    assert 'poolgate_pool_waiting{database="appdb",user="app"} 0.0' in lines


def test_each_request_logs_one_structured_line_without_secrets_or_values(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, app_url: str
) -> None:
    fresh = gateways()
    secret_value = "do-not-log-this-value"
    ok = post_sql(
        fresh.url,
        app_url,
        {"query": "SELECT $1::text FROM generate_series(1, 3)", "params": [secret_value]},
    )
    refused = post_sql(fresh.url, make_app_url(password="leaky-password"), {"query": "SELECT 1"})
    failed = post_sql(fresh.url, app_url, {"query": "SELECT $1::int", "params": [secret_value]})
    log_text = fresh.log_once_it_has(failed.headers["Neon-Request-Id"])
    for secret in (secret_value, "leaky-password", "app-secret"):
        assert secret not in log_text
    records = [
        record
        for line in log_text.splitlines()
        if line.startswith("{")
        if (record := json.loads(line))["event"] == "request" and record["path"] == "/sql"
    ]
    assert [r["request_id"] for r in records] == [
        ok.headers["Neon-Request-Id"],
        refused.headers["Neon-Request-Id"],
        failed.headers["Neon-Request-Id"],
    ]
    assert [(r["status"], r["rows"], r["sqlstate"]) for r in records] == [
        (200, 3, None),
        (400, None, "28P01"),
        (400, None, "22P02"),
    ]
    assert all(r["duration_ms"] > 0 for r in records)
