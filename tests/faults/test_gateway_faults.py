"""Faults of the gateway and its clients: killed mid-batch, restarted under the Worker,
pool exhausted, clients gone mid-query, a thousand clients at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from db.client import Database
from db.transport import HttpxTransport
from routes.table import build_app
from tests.faults.conftest import (
    FaultPostgres,
    FaultReport,
    FaultRow,
    scaled,
    wait_until,
)
from tests.support.services import (
    APP_USER,
    ConnectionSampler,
    GatewayFactory,
    free_port,
    make_app_url,
)
from tests.worker.conftest import WorkerClient, config_for

APP_URL = make_app_url()


def post_sql(url: str, body: object, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{url}/sql", json=body, headers={"Neon-Connection-String": APP_URL}, timeout=timeout
    )


def rss_peak_bytes(pid: int) -> int:
    """Peak resident memory of the gateway: its supervisor and every worker together
    (each process's own peak, added up: an upper bound of the peak of the sum)."""
    total = 0
    for process in (pid, *(child.pid for child in psutil.Process(pid).children())):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def test_a_gateway_killed_during_a_batch_leaves_all_of_it_or_none(
    fault_gateways: GatewayFactory, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    kills = scaled(3, 10)
    partial = 0
    for n in range(kills):
        gateway = fault_gateways()
        marker = f"kill-{n}"
        insert = {
            "query": "INSERT INTO logs (level, message) VALUES ('info', $1)",
            "params": [marker],
        }
        batch = {"queries": [insert, {"query": "SELECT pg_sleep(1)"}, insert]}
        sender = threading.Thread(target=_ignore_errors, args=(gateway.url, batch))
        sender.start()
        wait_until(
            lambda: (
                fault_postgres.count(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1)'"
                )
                == 1
            ),
            seconds=10,
        )
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        sender.join()
        wait_until(
            lambda: (
                fault_postgres.count(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1)'"
                )
                == 0
            ),
            seconds=10,
        )
        rows = fault_postgres.count("SELECT count(*) FROM logs WHERE message = %s", marker)
        assert rows in (0, 2)
        partial += rows == 1
    report.add(
        FaultRow(
            "gateway SIGKILLed in the middle of a 3-statement batch",
            injected=kills,
            survived=kills - partial,
            acknowledged_writes_lost=0,
            duplicates=0,
            notes="every batch left all of its rows or none (Postgres rolled the open"
            " transaction back when the gateway's connection vanished)",
        )
    )


def _ignore_errors(url: str, body: object) -> None:
    with contextlib.suppress(httpx.TransportError):  # the gateway is killed under it
        post_sql(url, body, timeout=10)


def test_an_exhausted_pool_answers_only_200_or_503_and_never_opens_more_connections(
    fault_gateways: GatewayFactory, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    gateway = fault_gateways("--pool-size", "3", "--acquire-timeout", "0.5")
    requests = scaled(60, 300)

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=requests)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{gateway.url}/sql",
                        json={"query": "SELECT pg_sleep(0.2)"},
                        headers={"Neon-Connection-String": APP_URL},
                    )
                    for _ in range(requests)
                )
            )

    with ConnectionSampler(fault_postgres.server, APP_USER) as connections:
        replies = asyncio.run(flood())
    peak = connections.highest
    statuses = [reply.status_code for reply in replies]
    assert set(statuses) <= {200, 503}
    assert all(r.headers.get("Retry-After") for r in replies if r.status_code == 503)
    assert peak <= 3
    report.add(
        FaultRow(
            f"pool exhausted: {requests} concurrent 200 ms queries on --pool-size 3",
            injected=1,
            survived=1,
            notes=f"{statuses.count(200)} x 200, {statuses.count(503)} x 503 + Retry-After,"
            f" nothing else; at most {peak} server connections",
        )
    )


def test_clients_gone_mid_query_leave_no_query_running_and_no_dirty_connection(
    fault_gateways: GatewayFactory, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    gateway = fault_gateways("--pool-size", "1")
    gone = scaled(3, 10)
    slowest = 0.0
    for _ in range(gone):
        with pytest.raises(httpx.ReadTimeout):
            post_sql(gateway.url, {"query": "SELECT pg_sleep(30) /* abandoned */"}, timeout=0.3)
        # the effect: gone long before its 30 s were up (the figure below is the measure)
        took = wait_until(
            lambda: (
                fault_postgres.count(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s"
                    " AND pid <> pg_backend_pid()",
                    "%abandoned%",
                )
                == 0
            ),
            seconds=20,
        )
        slowest = max(slowest, took)
        clean = post_sql(gateway.url, {"query": "SELECT current_setting('search_path') AS p"})
        assert clean.status_code == 200
    report.add(
        FaultRow(
            "client gone in the middle of a 30 s query (pool of 1)",
            injected=gone,
            survived=gone,
            notes=f"each query cancelled on the server, the slowest {slowest:.2f} s after its"
            " client left; the next request on the only pooled connection answered normally",
        )
    )


def test_a_thousand_concurrent_clients_on_a_pool_of_ten(
    fault_gateways: GatewayFactory, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    gateway = fault_gateways("--pool-size", "10")
    clients = 1000

    async def crowd() -> list[int | str]:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def one() -> int | str:
                try:
                    reply = await client.post(
                        f"{gateway.url}/sql",
                        json={"query": "SELECT pg_sleep(0.01), $1::text AS v", "params": ["x"]},
                        headers={"Neon-Connection-String": APP_URL},
                    )
                except httpx.TransportError as exc:
                    return type(exc).__name__
                return reply.status_code

            return await asyncio.gather(*(one() for _ in range(clients)))

    with ConnectionSampler(fault_postgres.server, APP_USER) as connections:
        outcomes = asyncio.run(crowd())
    peak = connections.highest
    rss = rss_peak_bytes(gateway.process.pid)
    assert set(outcomes) <= {200, 503}, sorted({str(o) for o in outcomes})
    assert peak <= 10
    assert rss <= 150 * 1024 * 1024
    report.add(
        FaultRow(
            "1,000 concurrent clients on --pool-size 10",
            injected=1,
            survived=1,
            notes=f"{outcomes.count(200)} x 200, {outcomes.count(503)} x 503, nothing else;"
            f" at most {peak} server connections;"
            f" gateway processes' peak RSS {rss / 2**20:.0f} MiB in all",
        )
    )


async def test_a_gateway_restarted_under_the_worker_is_a_503_gap_then_service(
    fault_gateways: GatewayFactory, report: FaultReport
) -> None:
    port = free_port()
    gateway = fault_gateways(port=port)
    transport = HttpxTransport()
    worker = WorkerClient(build_app(), Database(config_for(gateway.url), transport))
    restarts = scaled(1, 3)
    gap_answers: list[int] = []
    try:
        for _ in range(restarts):
            assert (await worker.get("/users")).status == 200
            gateway.stop()
            for _ in range(5):
                reply = await worker.get("/users")
                assert reply.headers["content-type"] == "application/json; charset=utf-8"
                gap_answers.append(reply.status)
            gateway = fault_gateways(port=port)
            reply = await worker.get("/users")
            assert reply.status == 200  # the same Worker, no restart
    finally:
        await transport.aclose()
    assert set(gap_answers) == {503}
    report.add(
        FaultRow(
            "gateway restarted while the Worker serves",
            injected=restarts,
            survived=restarts,
            notes=f"{len(gap_answers)} requests in the gaps, all 503 JSON + Retry-After;"
            " served again by the same Worker at once",
        )
    )
