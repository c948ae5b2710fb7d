"""Faults of a fleet: HAProxy (round-robin, /readyz checks) in front of two gateway
replicas of two workers each, sharing one Redis, under a steady load of plain reads,
keyed writes through the Worker (retried until acknowledged, as writers.py does) and
interactive transactions whose calls alternate replicas.

- one replica SIGKILLed: only requests that were on it fail, keyed retries then
  succeed (nothing lost, nothing twice), its transactions answer as expired (410), the
  other replica keeps serving;
- a rolling restart of both (SIGTERM, drain, exit, start again, the next one): no plain
  request fails, nothing lost or twice, every transaction committed or answered an error.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from db.client import Database
from db.transport import HttpxTransport
from routes.table import build_app
from tests.faults.conftest import FaultPostgres, FaultReport, FaultRow, scaled, wait_until
from tests.gateway.test_replicas import start_replica
from tests.support.balancer import Balancer, start_haproxy
from tests.support.services import Gateway, GatewayFactory, free_port, make_app_url
from tests.worker.conftest import WorkerClient, config_for

HEADERS = {"Neon-Connection-String": make_app_url()}
RETRIED = (502, 503, 504)  # a keyed write answered so is sent again with its key
# several of the balancer's health checks (every 300 ms, down at the first failed one)
DRAIN_SECONDS = str(scaled(1, 2))


@dataclass
class Fleet:
    balancer: Balancer
    replicas: list[Gateway]
    ports: list[int]
    redis: str
    gateways: GatewayFactory

    def replace(self, index: int) -> None:
        """Replica `index` started again where it was, once the balancer sees it up."""
        [self.replicas[index]] = start_replicas(
            self.gateways, self.redis, [self.ports[index]], "--drain-seconds", DRAIN_SECONDS
        )
        self.balancer.wait_for(f"r{index}", "UP")

    def name_of(self, index: int) -> str:
        """Replica `index`'s name, as its workers registered it (the last to: a replica
        started again at the same port writes on in the same log)."""
        log = self.replicas[index].log_once_it_has('"replica_registered"')
        line = [line for line in log.splitlines() if '"replica_registered"' in line][-1]
        return line.split("poolgate:replica:")[1].split(":")[0]


def start_replicas(
    gateways: GatewayFactory, redis: str, ports: list[int], *options: str
) -> list[Gateway]:
    """Started side by side (each takes a second or two)."""
    started: dict[int, Gateway] = {}
    failed: list[BaseException] = []

    def one(port: int) -> None:
        try:
            started[port] = start_replica(gateways, redis, *options, port=port)
        except BaseException as exc:  # raised below, in the test's own thread
            failed.append(exc)

    threads = [threading.Thread(target=one, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise failed[0]
    return [started[port] for port in ports]


@pytest.fixture(scope="module")
def fleet(
    fault_postgres: FaultPostgres, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """One fleet for the module: the kill test replaces the replica it killed."""
    gateways = GatewayFactory(fault_postgres.server, tmp_path_factory.mktemp("fleet-logs"))
    redis = redis_url.rsplit("/", 1)[0] + "/6"
    ports = [free_port(), free_port()]
    replicas = start_replicas(gateways, redis, ports, "--drain-seconds", DRAIN_SECONDS)
    balancer = start_haproxy(
        tmp_path_factory.mktemp("fleet-haproxy"),
        {f"r{n}": f"127.0.0.1:{p}" for n, p in enumerate(ports)},
    )
    yield Fleet(balancer, replicas, ports, redis, gateways)
    balancer.stop()
    for gateway in gateways.started:  # SIGINT: no drain, there is no traffic left
        if gateway.process.poll() is None:
            gateway.process.send_signal(signal.SIGINT)
    gateways.stop_all()
    wait_until(lambda: fault_postgres.server_connections() == 0, seconds=10)  # as others do


@dataclass
class Attempt:
    status: int  # 0: no HTTP answer at all
    started: float
    ended: float
    detail: str = ""  # of a failure: what the answer said


@dataclass
class Load:
    """What the clients saw."""

    reads: list[Attempt] = field(default_factory=list)
    writes: list[Attempt] = field(default_factory=list)  # every attempt of a keyed write
    acknowledged: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    # transaction id (or a placeholder while none) -> "committed", or the failing status
    transactions: dict[str, str] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)  # transaction -> its rows' marker
    begin_refused: int = 0  # 503 to POST /transaction (a draining replica), retried

    @staticmethod
    def failed(attempts: list[Attempt]) -> list[Attempt]:
        return [a for a in attempts if a.status != 200 and a.status != 201]


async def post(client: httpx.AsyncClient, path: str, body: object, **headers: str) -> int:
    return (await answer(client, path, body, **headers))[0]


async def answer(
    client: httpx.AsyncClient, path: str, body: object, **headers: str
) -> tuple[int, str]:
    """Status and, of a failure, what it said (0 and the error: no HTTP answer)."""
    try:
        reply = await client.post(path, json=body, headers={**HEADERS, **headers})
    except httpx.TransportError as exc:
        return 0, repr(exc)
    return reply.status_code, "" if reply.status_code == 200 else reply.text[:200]


async def read_until(stop: asyncio.Event, client: httpx.AsyncClient, load: Load) -> None:
    while not stop.is_set():
        started = time.monotonic()
        status, detail = await answer(client, "/sql", {"query": "SELECT count(*) FROM logs"})
        load.reads.append(Attempt(status, started, time.monotonic(), detail))
        await asyncio.sleep(0.01)


async def write_until(stop: asyncio.Event, worker: WorkerClient, name: str, load: Load) -> None:
    """One keyed write after another, each sent again until acknowledged."""
    n = 0
    while not stop.is_set():
        title = f"{name}-{n}"
        for _ in range(400):
            started = time.monotonic()
            reply = await worker.post(
                "/logs", {"level": "info", "message": title}, headers={"idempotency-key": title}
            )
            detail = "" if reply.status == 201 else reply.body[:200].decode(errors="replace")
            load.writes.append(Attempt(reply.status, started, time.monotonic(), detail))
            if reply.status == 201:
                load.acknowledged.append(title)
                break
            assert reply.status in RETRIED, reply.body[:300]
            await asyncio.sleep(0.05)
        else:
            load.given_up.append(title)
        n += 1


async def transact_until(
    stop: asyncio.Event, client: httpx.AsyncClient, name: str, load: Load
) -> None:
    """Transactions of two inserts each; a begin refused by a draining replica is sent
    again (its Retry-After), any other failure ends the transaction there."""
    n = 0
    while not stop.is_set():
        marker = f"{name}-{n}"
        n += 1
        try:
            opened = await client.post("/transaction", json={"timeout_ms": 10000}, headers=HEADERS)
        except httpx.TransportError:
            load.transactions[f"{marker}?"] = "begin: no answer"
            continue
        if opened.status_code == 503:
            assert opened.headers["Retry-After"], opened.text  # open it elsewhere
            load.begin_refused += 1
            await asyncio.sleep(0.05)
            continue
        if opened.status_code != 201:
            load.transactions[f"{marker}?"] = f"begin: {opened.status_code}"
            continue
        transaction = opened.json()["id"]
        load.markers[transaction] = marker
        outcome = "committed"
        for _ in range(2):
            status = await post(
                client,
                "/sql",
                {
                    "query": "INSERT INTO logs (level, message) VALUES ('info', $1)",
                    "params": [marker],
                },
                **{"Poolgate-Transaction": transaction},
            )
            if status != 200:
                outcome = f"statement: {status}"
                break
        else:
            status = await post(client, f"/transaction/{transaction}/commit", None)
            if status != 200:
                outcome = f"commit: {status}"
        load.transactions[transaction] = outcome


def timeline(events: list[tuple[float, str]], failed: list[Attempt]) -> str:
    """Failures among the events that caused them, in order (an assertion's message)."""
    lines = [(at, name) for at, name in events]
    lines += [
        (a.started, f"failed {a.status} after {a.ended - a.started:.2f} s: {a.detail}")
        for a in failed
    ]
    start = min(at for at, _ in lines) if lines else 0.0
    return "\n".join(f"{at - start:8.3f} {name}" for at, name in sorted(lines))


def rows_by_message(postgres: FaultPostgres) -> dict[str, int]:
    with postgres.server.admin("appdb") as conn:
        rows = conn.execute("SELECT message, count(*) FROM logs GROUP BY message").fetchall()
    return {str(message): int(str(n)) for message, n in rows}


def check_writes(load: Load, rows: dict[str, int], prefix: str) -> tuple[int, int]:
    """(acknowledged writes lost, duplicates) of the keyed writes named `prefix`-..."""
    lost = len([title for title in load.acknowledged if rows.get(title, 0) == 0])
    duplicates = sum(n - 1 for title, n in rows.items() if title.startswith(prefix) and n > 1)
    return lost, duplicates


def check_transactions(load: Load, rows: dict[str, int]) -> list[str]:
    """Transactions whose rows do not match what their client was told: committed means
    both rows, an error before COMMIT none, a COMMIT without an answer either."""
    wrong = []
    for transaction, marker in load.markers.items():
        outcome, found = load.transactions.get(transaction, "unfinished"), rows.get(marker, 0)
        if outcome == "committed":
            ok = found == 2
        elif outcome.startswith("commit: ") and outcome.split()[1] in ("0", "502", "504"):
            ok = found in (0, 2)  # the answer was lost: either, never half
        else:
            ok = found == 0
        if not ok:
            wrong.append(f"{transaction}: {outcome}, {found} rows")
    return wrong


async def run_load(
    fleet: Fleet,
    faults: object,
    name: str = "fleet",
    readers: int = 2,
    writers: int = 3,
    transactors: int = 2,
) -> Load:
    """`faults`: a coroutine function taking the stop event; the load runs until it sets
    it. Writes and transactions are named `name`-..., each load's own."""
    load = Load()
    stop = asyncio.Event()
    transport = HttpxTransport()
    worker = WorkerClient(build_app(), Database(config_for(fleet.balancer.url), transport))
    limits = httpx.Limits(max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=fleet.balancer.url, timeout=30, limits=limits) as client:
        try:
            await asyncio.gather(
                faults(stop),  # type: ignore[operator]
                *(read_until(stop, client, load) for _ in range(readers)),
                *(write_until(stop, worker, f"{name}-w{n}", load) for n in range(writers)),
                *(transact_until(stop, client, f"{name}-t{n}", load) for n in range(transactors)),
            )
        finally:
            await transport.aclose()
    return load


@dataclass
class Kill:
    """One replica killed under load, and what the load saw."""

    load: Load
    killed: float  # when it was SIGKILLed
    down: float  # when HAProxy was seen marking it down
    held_open: list[int]  # answers, after the kill, to calls on its idle open transactions
    victim: str  # its name


async def kill_under_load(fleet: Fleet, name: str) -> Kill:
    """Replica 0 SIGKILLed while the load runs, the other alone for a while, then
    replica 0 started again (for the next round, and the next test)."""
    victim = fleet.name_of(0)
    moments: dict[str, float] = {}
    held_open: list[int] = []

    async def kill(stop: asyncio.Event) -> None:
        await asyncio.sleep(scaled(1, 3))
        async with httpx.AsyncClient(timeout=30) as direct:
            opened = [
                await direct.post(f"{fleet.replicas[0].url}/transaction", json={}, headers=HEADERS)
                for _ in range(scaled(2, 5))
            ]
        fleet.replicas[0].process.send_signal(signal.SIGKILL)
        moments["killed"] = time.monotonic()
        await asyncio.to_thread(fleet.balancer.wait_for, "r0", "DOWN")
        moments["down"] = time.monotonic()
        async with httpx.AsyncClient(base_url=fleet.balancer.url, timeout=30) as client:
            for reply in opened:
                inside = {"Poolgate-Transaction": reply.json()["id"]}
                held_open.append(await post(client, "/sql", {"query": "SELECT 1"}, **inside))
        await asyncio.sleep(scaled(2, 4))  # the other replica alone
        stop.set()

    load = await run_load(fleet, kill, name)
    fleet.replicas[0].process.wait(timeout=30)
    await asyncio.to_thread(fleet.replace, 0)
    return Kill(load, moments["killed"], moments["down"], held_open, victim)


async def test_a_replica_killed_under_load_fails_only_what_was_on_it(
    fleet: Fleet, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    kills = [await kill_under_load(fleet, f"kill{n}") for n in range(scaled(1, 3))]
    rows = rows_by_message(fault_postgres)
    failed: list[Attempt] = []
    in_flight = requests = acknowledged = committed = idle_held = 0
    busy: list[str] = []
    for n, kill in enumerate(kills):
        load = kill.load
        lost, duplicates = check_writes(load, rows, f"kill{n}-w")
        assert load.given_up == [] and (lost, duplicates) == (0, 0)
        assert check_transactions(load, rows) == []
        these = Load.failed(load.reads) + Load.failed(load.writes)
        # what failed was sent before the balancer saw the replica gone (it was on it,
        # or on its way to it); nothing failed once the balancer knew
        assert all(a.started <= kill.down for a in these), [a.started - kill.down for a in these]
        assert {a.status for a in these} <= {0, *RETRIED}
        # calls on its transactions answer as expired through the other replica; a call
        # that was on it when it died has no answer (0, 502) or, for a COMMIT, 504
        assert kill.held_open and set(kill.held_open) == {410}
        held = [o for t, o in load.transactions.items() if f".{kill.victim}." in t]
        unfinished = [o for o in held if o != "committed"]
        assert all(o.endswith((": 410", ": 502", ": 504", ": 0")) for o in unfinished), unfinished
        after = [a for a in load.reads if a.started > kill.down]
        assert after and all(a.status == 200 for a in after)  # the other replica serves on
        failed += these
        in_flight += len([a for a in these if a.started <= kill.killed])
        requests += len(load.reads) + len(load.writes)
        acknowledged += len(load.acknowledged)
        committed += list(load.transactions.values()).count("committed")
        idle_held += len(kill.held_open)
        busy += [o.split()[-1] for o in unfinished]
    detection = max(kill.down - kill.killed for kill in kills)
    report.add(
        FaultRow(
            "one of two replicas (2 workers each, behind HAProxy) SIGKILLed under reads,"
            " keyed writes and transactions",
            injected=len(kills),
            survived=len(kills),
            acknowledged_writes_lost=0,
            duplicates=0,
            notes=f"{len(failed)} of {requests} requests failed ({in_flight} in flight at the"
            f" kill, the others sent before HAProxy marked it down, at most"
            f" {detection:.2f} s later), all retried to success (a keyed write is retried on"
            f" HAProxy's 502 too); {acknowledged} writes"
            f" acknowledged; calls on its {idle_held} open transactions answered 410"
            + (f", calls that were on it {sorted(set(busy))}" if busy else "")
            + f"; {committed} transactions committed; the other replica served throughout",
        )
    )


async def test_a_rolling_restart_under_load_fails_no_plain_request(
    fleet: Fleet, fault_postgres: FaultPostgres, report: FaultReport
) -> None:
    rounds = scaled(1, 3)
    exits: list[int] = []
    events: list[tuple[float, str]] = []  # for a failure's message

    async def roll(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.5)
        for _ in range(rounds):
            for index in (0, 1):
                replica = fleet.replicas[index]
                replica.process.send_signal(signal.SIGTERM)
                events.append((time.monotonic(), f"r{index} SIGTERM"))
                exits.append(await asyncio.to_thread(replica.process.wait, 60))
                events.append((time.monotonic(), f"r{index} exited"))
                await asyncio.to_thread(fleet.replace, index)
                events.append((time.monotonic(), f"r{index} UP again"))
        await asyncio.sleep(0.5)
        stop.set()

    load = await run_load(fleet, roll, "roll")
    rows = rows_by_message(fault_postgres)
    lost, duplicates = check_writes(load, rows, "roll-w")
    failed_reads, failed_writes = Load.failed(load.reads), Load.failed(load.writes)
    wrong = check_transactions(load, rows)
    outcomes = list(load.transactions.values())
    assert exits == [0] * (2 * rounds)
    assert failed_reads == [] and failed_writes == [], (
        timeline(events, failed_reads + failed_writes) + "\n" + fleet.balancer.log_text()
    )
    assert load.given_up == [] and (lost, duplicates) == (0, 0)
    assert wrong == []
    assert all(o == "committed" or ":" in o for o in outcomes)  # committed, or told an error
    report.add(
        FaultRow(
            f"rolling restart of both replicas ({rounds} round(s): SIGTERM, drain"
            f" {DRAIN_SECONDS} s, exit, start) behind HAProxy under reads, keyed writes and"
            " transactions",
            injected=2 * rounds,
            survived=2 * rounds,
            acknowledged_writes_lost=lost,
            duplicates=duplicates,
            notes=f"0 of {len(load.reads)} reads and 0 of {len(load.writes)} write attempts"
            f" failed; {outcomes.count('committed')} of {len(outcomes)} transactions"
            " committed"
            + (
                f", the others answered an error ({sorted(set(outcomes) - {'committed'})})"
                if set(outcomes) - {"committed"}
                else ""
            )
            + f"; {load.begin_refused} POST /transaction answered 503 + Retry-After by a"
            " draining replica and sent again",
        )
    )
