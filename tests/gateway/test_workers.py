"""`--workers N`: several processes on one port behave as one gateway.

Each request below goes over a new TCP connection, so the kernel (SO_REUSEPORT) spreads
them over the workers; a test that needs every worker involved checks, from the request
log's `worker` field, that each one answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import ConnectionSampler, Gateway, GatewayFactory
from tests.support.sql import post_sql


def workers_of(gateway: Gateway) -> list[psutil.Process]:
    return psutil.Process(gateway.process.pid).children()


def fresh_connection_post(
    gateway: Gateway, url: str, body: object, **headers: str
) -> httpx.Response:
    """One request on a connection of its own (a new 4-tuple for the kernel to hash)."""
    with httpx.Client(headers={"Connection": "close"}) as client:
        return client.post(
            f"{gateway.url}/sql", json=body, headers={"Neon-Connection-String": url, **headers}
        )


def served_by(gateway: Gateway, url: str) -> int:
    """The pid of the worker that answered a query, from its request log line."""
    return answered_by(gateway, fresh_connection_post(gateway, url, {"query": "SELECT 1"}))


def answered_by(gateway: Gateway, reply: httpx.Response) -> int:
    request_id = reply.headers["Neon-Request-Id"]
    for line in gateway.log_once_it_has(request_id).splitlines():
        if request_id in line:
            return int(json.loads(line)["worker"])
    raise AssertionError("no log line for the request")


def both_serving(gateway: Gateway, url: str) -> Gateway:
    """The gateway once every worker has answered (a worker still starting has not
    heard of what the others saw before it came up)."""
    expected = {worker.pid for worker in workers_of(gateway)}
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while seen != expected and time.monotonic() < deadline:
        seen.add(served_by(gateway, url))
    assert seen == expected
    return gateway


def test_the_supervisor_starts_one_worker_per_cpu_and_the_pool_is_split_between_them(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "workers_split")
    gateway = gateways("--workers", "2", "--pool-size", "4", "--acquire-timeout", "30")
    assert len(workers_of(gateway)) == 2

    async def crowd() -> list[int]:
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        f"{gateway.url}/sql",
                        json={"query": "SELECT pg_sleep(0.05)"},
                        headers={"Neon-Connection-String": url},
                    )
                    for _ in range(60)
                )
            )
        return [reply.status_code for reply in replies]

    with ConnectionSampler(postgres, "workers_split") as connections:
        statuses = asyncio.run(crowd())
    assert statuses == [200] * 60
    assert 2 <= connections.highest <= 4  # both workers' pools, never more than --pool-size


def ok_requests(gateway: Gateway) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith('poolgate_requests_total{outcome="ok"} '):
            return float(line.split()[-1])
    return 0.0


def test_metrics_add_up_every_workers_requests(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "workers_metrics")
    gateway = both_serving(gateways("--workers", "2"), url)
    before = ok_requests(gateway)
    pids = [served_by(gateway, url) for _ in range(40)]
    assert len(set(pids)) == 2  # both workers answered some of the 40
    assert ok_requests(gateway) == before + 40
    lines = httpx.get(f"{gateway.url}/metrics").text.splitlines()
    assert "poolgate_max_connections 100.0" in lines  # 50 + 50


def test_an_invalidation_reaches_the_cache_of_every_worker(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    url = make_role(postgres, "workers_cache")
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS worker_items")
        conn.execute("CREATE TABLE worker_items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO worker_items VALUES (1, 'old')")
        conn.execute("GRANT ALL ON worker_items TO workers_cache")
    gateway = both_serving(gateways("--workers", "2"), url)
    read = {"query": "SELECT label FROM worker_items WHERE id = 1"}
    cached = {"Poolgate-Cache-TTL": "600", "Poolgate-Cache-Tags": "items"}
    statuses = [
        fresh_connection_post(gateway, url, read, **cached).headers["Poolgate-Cache-Status"]
        for _ in range(30)
    ]
    assert statuses.count("miss") == 2  # one fill per worker: each has its own cache
    write = {"query": "UPDATE worker_items SET label = 'new' WHERE id = 1"}
    reply = fresh_connection_post(gateway, url, write, **{"Poolgate-Invalidate-Tags": "items"})
    assert reply.status_code == 200 and "Poolgate-Invalidate-Status" not in reply.headers
    labels = {
        fresh_connection_post(gateway, url, read, **cached).json()["rows"][0]["label"]
        for _ in range(30)
    }
    assert labels == {"new"}


def test_failed_logins_are_throttled_across_workers(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, app_url: str
) -> None:
    make_role(postgres, "workers_throttle")
    gateway = both_serving(gateways("--workers", "2"), app_url)
    wrong = "postgresql://workers_throttle:wrong@db.invalid/appdb"
    statuses = [
        fresh_connection_post(gateway, wrong, {"query": "SELECT 1"}).status_code for _ in range(14)
    ]
    assert statuses == [400] * 10 + [429] * 4


def test_a_worker_that_dies_is_replaced_and_the_gateway_keeps_serving(
    gateways: GatewayFactory, app_url: str
) -> None:
    gateway = gateways("--workers", "2")
    victim = workers_of(gateway)[0]
    victim.kill()
    victim.wait(10)
    deadline = time.monotonic() + 60  # a wait for the restart, not a measurement of it
    while time.monotonic() < deadline and len(workers_of(gateway)) < 2:
        time.sleep(0.05)
    assert len(workers_of(gateway)) == 2
    assert all(
        post_sql(gateway.url, app_url, {"query": "SELECT 1"}).status_code == 200 for _ in range(20)
    )


def test_killing_the_supervisor_takes_its_workers_with_it(gateways: GatewayFactory) -> None:
    gateway = gateways("--workers", "2")
    workers = workers_of(gateway)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(gateways: GatewayFactory) -> None:
    gateway = gateways("--workers", "2")
    workers = workers_of(gateway)
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=20) == 0
    assert not any(worker.is_running() for worker in workers)


def test_a_second_gateway_on_a_taken_port_is_refused_instead_of_sharing_it(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    first = gateways("--workers", "2")
    port = first.url.rsplit(":", 1)[1]
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolgate.cli",
            "serve",
            "--upstream",
            postgres.upstream_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert second.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "3", "--pool-size", "2"], "--workers 3 is more than"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_more_workers_than_connections_is_refused(
    options: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poolgate.cli", "serve", "--upstream", "postgresql://h", *options],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr


def test_an_invalidation_after_a_worker_was_replaced_reaches_the_new_one(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    """The survivor's link to the dead worker is broken; it reconnects to the new one
    instead of reporting the write's invalidation as failed."""
    url = make_role(postgres, "workers_replaced")
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS replaced_items")
        conn.execute("CREATE TABLE replaced_items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO replaced_items VALUES (1, 'old')")
        conn.execute("GRANT ALL ON replaced_items TO workers_replaced")
    gateway = both_serving(gateways("--workers", "2"), url)
    write = {"query": "UPDATE replaced_items SET label = $1 WHERE id = 1"}
    invalidate = {"Poolgate-Invalidate-Tags": "items"}

    def invalidating_write(label: str) -> httpx.Response:
        return fresh_connection_post(gateway, url, {**write, "params": [label]}, **invalidate)

    workers = {worker.pid for worker in workers_of(gateway)}
    invalidated_from: set[int] = set()  # each opens its link to the other
    while invalidated_from != workers:
        invalidated_from.add(answered_by(gateway, invalidating_write("warm")))
    victim, survivor = workers_of(gateway)
    victim.kill()
    victim.wait(10)
    deadline = time.monotonic() + 60  # a wait for the restart, not a measurement of it
    while len(workers_of(gateway)) < 2 or gateway.log_text().count('"listening"') < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    read = {"query": "SELECT label FROM replaced_items WHERE id = 1"}
    cached = {"Poolgate-Cache-TTL": "600", "Poolgate-Cache-Tags": "items"}
    for _ in range(20):  # both workers cache the value
        fresh_connection_post(gateway, url, read, **cached)
    while True:  # until the survivor, whose link to the dead worker is broken, answers
        reply = invalidating_write("new")
        assert reply.status_code == 200
        assert "Poolgate-Invalidate-Status" not in reply.headers
        if answered_by(gateway, reply) == survivor.pid:
            break
    labels = {
        fresh_connection_post(gateway, url, read, **cached).json()["rows"][0]["label"]
        for _ in range(20)
    }
    assert labels == {"new"}


def test_a_graceful_stop_of_several_workers_logs_no_traceback(
    gateways: GatewayFactory, app_url: str
) -> None:
    """With links between the workers open (metrics are gathered over them, a write's
    invalidation is confirmed over them), SIGTERM stops every worker quietly."""
    gateway = gateways("--workers", "2")
    for _ in range(6):  # fresh connections: both workers answer some, so both ask
        assert httpx.get(f"{gateway.url}/metrics").status_code == 200
        write = post_sql(
            gateway.url, app_url, {"query": "SELECT 1"}, headers={"Poolgate-Invalidate-Tags": "t"}
        )
        assert write.status_code == 200
    gateway.stop()
    assert gateway.process.returncode == 0
    log = gateway.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_stuck_sibling_does_not_hold_a_failed_login_past_the_request_deadline(
    gateways: GatewayFactory, postgres: EmbeddedPostgres
) -> None:
    """A failed login is told to the sibling workers before it is answered, but a sibling
    that does not answer (stopped, here) is given up at the request's deadline (--
    statement-timeout 0.2 + 1 s), not at the 2 s a sibling's reply may take: the log
    says which of the two ended the wait."""
    make_role(postgres, "stuck_sibling")
    wrong = "postgresql://stuck_sibling:wrong@db.invalid/appdb"
    gateway = gateways("--workers", "2", "--statement-timeout", "0.2")
    stopped, running = workers_of(gateway)
    stopped.suspend()
    try:
        answered = None
        for _ in range(40):  # fresh connections: the stopped worker's are never answered
            try:
                with httpx.Client(headers={"Connection": "close"}, timeout=5) as client:
                    answered = client.post(
                        f"{gateway.url}/sql",
                        json={"query": "SELECT 1"},
                        headers={"Neon-Connection-String": wrong},
                    )
                break
            except httpx.TimeoutException:
                continue
        assert answered is not None and answered.json()["code"] == "28P01"
        log = gateway.log_once_it_has("siblings not told of a login", seconds=30)
        assert "did not record a failed login" not in log
    finally:
        stopped.resume()
    assert running.is_running()
