"""Replicas behind a real load balancer: HAProxy (round-robin, health checks on /readyz)
in front of two gateways of two workers each, sharing one Redis. A call on an
interactive transaction that reaches the replica not holding it is forwarded to the one
that does; the shared cache sees every replica's writes; a holder that is gone answers
as an expired transaction."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from tests.support.accelerate import SUPPORTED_CLIENT, keys_line
from tests.support.balancer import Balancer, start_haproxy
from tests.support.certificates import Certificates
from tests.support.services import (
    APP_USER,
    Gateway,
    GatewayFactory,
    free_port,
    make_app_url,
    run_serve,
    start_redis,
    wait_until_not_running,
)

API_KEY = "replica-test-key-0123456789"
# with API keys on: the key to the gateway in Authorization, the password in the URL
HEADERS = {"Neon-Connection-String": make_app_url(), "Authorization": f"Bearer {API_KEY}"}
TX = "Poolgate-Transaction"


def post_sql(url: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/sql", json=body, headers={**HEADERS, **headers}, timeout=30)


def replica_redis(redis_url: str) -> str:
    """A database of the session's Redis of these tests' own."""
    return redis_url.rsplit("/", 1)[0] + "/5"


def start_replica(
    gateways: GatewayFactory,
    redis: str,
    *options: str,
    port: int | None = None,
    workers: int = 2,
) -> Gateway:
    port = port or free_port()
    return gateways(
        "--workers",
        str(workers),
        "--cache",
        redis,
        "--advertise-url",
        f"http://127.0.0.1:{port}",
        *options,
        port=port,
    )


@dataclass
class Fleet:
    balancer: Balancer
    replicas: list[Gateway]

    @property
    def url(self) -> str:
        return self.balancer.url


@pytest.fixture(scope="module")
def fleet(
    gateways: GatewayFactory, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    redis = replica_redis(redis_url)
    replicas = [start_replica(gateways, redis, "--api-keys", API_KEY) for _ in range(2)]
    balancer = start_haproxy(
        tmp_path_factory.mktemp("haproxy"),
        {f"r{n}": r.url.removeprefix("http://") for n, r in enumerate(replicas)},
    )
    yield Fleet(balancer, replicas)
    balancer.stop()
    for replica in replicas:
        replica.stop()


def forwarded_calls(replica: Gateway) -> int:
    return replica.log_text().count('"outcome": "forwarded"')


def open_transaction(url: str, **headers: str) -> str:
    opened = httpx.post(
        f"{url}/transaction", json={"timeout_ms": 14000}, headers={**HEADERS, **headers}
    )
    assert opened.status_code == 201, opened.text
    return str(opened.json()["id"])


def in_transaction(url: str, transaction: str, query: str, *params: object) -> httpx.Response:
    return httpx.post(
        f"{url}/sql",
        json={"query": query, "params": list(params)},
        headers={**HEADERS, "Poolgate-Transaction": transaction},
        timeout=30,
    )


def test_a_transaction_through_the_balancer_succeeds_on_every_call_as_calls_alternate(
    fleet: Fleet, schema: None
) -> None:
    before = [forwarded_calls(replica) for replica in fleet.replicas]
    marker = "replica-alternating"
    with httpx.Client(base_url=fleet.url, headers=HEADERS, timeout=30) as client:
        opened = client.post("/transaction", json={"timeout_ms": 14000})
        assert opened.status_code == 201, opened.text
        transaction = opened.json()["id"]
        inside = {"Poolgate-Transaction": transaction}
        for n in range(8):
            ran = client.post(
                "/sql",
                json={
                    "query": "INSERT INTO logs (level, message) VALUES ('info', $1) RETURNING id",
                    "params": [f"{marker}-{n}"],
                },
                headers=inside,
            )
            assert ran.status_code == 200, ran.text
        seen = client.post(
            "/sql",
            json={
                "query": "SELECT count(*)::int AS n FROM logs WHERE message LIKE $1",
                "params": [f"{marker}-%"],
            },
            headers=inside,
        )
        assert seen.status_code == 200 and seen.json()["rows"] == [{"n": 8}]
        committed = client.post(f"/transaction/{transaction}/commit")
        assert committed.status_code == 200 and committed.json() == {"committed": True}
    after = post_sql(
        fleet.url,
        {
            "query": "SELECT count(*)::int AS n FROM logs WHERE message LIKE $1",
            "params": [f"{marker}-%"],
        },
    )
    assert after.json()["rows"] == [{"n": 8}]
    # round-robin sent about half of the ten calls to the replica not holding it
    forwarded = [forwarded_calls(r) - b for r, b in zip(fleet.replicas, before, strict=True)]
    assert sum(forwarded) >= 3, forwarded


def test_a_forwarded_call_is_checked_by_the_holder_with_the_callers_credentials(
    fleet: Fleet,
) -> None:
    holder, other = fleet.replicas
    transaction = open_transaction(holder.url)
    stranger = make_app_url(password="not-the-password")
    wrong = httpx.post(
        f"{other.url}/sql",
        json={"query": "SELECT 1"},
        headers={
            **HEADERS,
            "Neon-Connection-String": stranger,
            "Poolgate-Transaction": transaction,
        },
    )
    assert wrong.status_code == 404  # someone else's transaction, as on one gateway
    right = in_transaction(other.url, transaction, "SELECT 2 AS two")
    assert right.status_code == 200 and right.json()["rows"] == [{"two": 2}]
    # the holder's answer, relayed: its request id is in the holder's log
    holder.log_once_it_has(right.headers["Neon-Request-Id"])
    rolled_back = httpx.post(f"{other.url}/transaction/{transaction}/rollback", headers=HEADERS)
    assert rolled_back.status_code == 200 and rolled_back.json() == {"rolled_back": True}


def test_a_client_gone_during_a_forwarded_call_cancels_the_statement_at_the_holder(
    fleet: Fleet, postgres: object
) -> None:
    holder, other = fleet.replicas
    transaction = open_transaction(holder.url)
    marker = "forwarded-and-abandoned"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{other.url}/sql",
            json={"query": f"SELECT pg_sleep(30) /* {marker} */"},
            headers={**HEADERS, "Poolgate-Transaction": transaction},
            timeout=0.5,
        )
    assert wait_until_not_running(postgres, marker, seconds=20) == 0  # type: ignore[arg-type]
    # the call ended the transaction there (its connection closed): rolled back
    after = in_transaction(other.url, transaction, "SELECT 1")
    assert after.status_code in (404, 410)


def test_a_cached_read_after_a_write_through_the_other_replica_sees_the_write(
    fleet: Fleet, schema: None
) -> None:
    reader, writer = fleet.replicas
    tag = "replica_cache_logs"
    read = {
        "query": "SELECT count(*)::int AS n FROM logs WHERE message = 'replica-cached'",
    }
    cached_headers = {"Poolgate-Cache-TTL": "600", "Poolgate-Cache-Tags": tag}
    first = post_sql(reader.url, read, **cached_headers)
    again = post_sql(reader.url, read, **cached_headers)
    assert first.status_code == 200, first.text
    assert again.headers["Poolgate-Cache-Status"] == "ttl"
    write = post_sql(
        writer.url,
        {"query": "INSERT INTO logs (level, message) VALUES ('info', 'replica-cached')"},
        **{"Poolgate-Invalidate-Tags": tag},
    )
    assert write.status_code == 200 and "Poolgate-Invalidate-Status" not in write.headers
    after = post_sql(reader.url, read, **cached_headers)
    assert after.headers["Poolgate-Cache-Status"] == "miss"
    assert after.json()["rows"][0]["n"] == first.json()["rows"][0]["n"] + 1


def test_a_call_on_a_transaction_of_a_stopped_replica_answers_as_expired(
    gateways: GatewayFactory, fleet: Fleet, redis_url: str
) -> None:
    gone = start_replica(gateways, replica_redis(redis_url), "--api-keys", API_KEY, workers=1)
    transaction = open_transaction(gone.url)
    gone.process.send_signal(signal.SIGINT)  # no drain: its open transaction rolled back
    gone.process.wait(timeout=60)
    for replica in fleet.replicas:  # it deregistered: nothing to connect to
        answer = in_transaction(replica.url, transaction, "SELECT 1")
        assert answer.status_code == 410, answer.text
        commit = httpx.post(f"{replica.url}/transaction/{transaction}/commit", headers=HEADERS)
        assert commit.status_code == 410


def register(redis_url: str, replica: str, url: str) -> None:
    """An entry in the registry as a replica's worker 0 makes it (for holders that are
    not running, or are something else)."""
    import redis

    with redis.Redis.from_url(replica_redis(redis_url)) as client:
        client.set(f"poolgate:replica:{replica}:0", url, ex=60)


def test_a_call_on_a_transaction_of_a_registered_replica_that_refuses_connections_is_410(
    fleet: Fleet, redis_url: str
) -> None:
    # killed: its entry outlives it until the expiry, and nothing listens at its address
    register(redis_url, "00000000dead", f"http://127.0.0.1:{free_port()}")
    answer = in_transaction(fleet.replicas[0].url, f"0.00000000dead.{'x' * 32}", "SELECT 1")
    assert answer.status_code == 410, answer.text


def test_a_call_forwarded_to_an_address_that_now_serves_another_replica_is_410(
    fleet: Fleet, redis_url: str
) -> None:
    # a replica restarted at the address of one that died before its entry expired: the
    # id names the dead one, the new one holds nothing of it
    register(redis_url, "0000000000ab", fleet.replicas[1].url)
    answer = in_transaction(fleet.replicas[0].url, f"0.0000000000ab.{'x' * 32}", "SELECT 1")
    assert answer.status_code == 410, answer.text
    fleet.replicas[1].log_once_it_has(answer.headers["Neon-Request-Id"])  # said there


def test_a_gateway_without_advertise_url_keeps_ids_of_its_own(gateway: Gateway) -> None:
    plain = {"Neon-Connection-String": make_app_url()}
    opened = httpx.post(f"{gateway.url}/transaction", json={}, headers=plain)
    transaction = opened.json()["id"]
    assert transaction.count(".") == 1  # <worker>.<random>: no replica named
    httpx.post(f"{gateway.url}/transaction/{transaction}/rollback", headers=plain)


def test_the_api_key_of_a_forwarded_call_is_checked_by_the_holder(
    fleet: Fleet,
) -> None:
    holder, other = fleet.replicas
    transaction = open_transaction(holder.url)
    inside = {"Neon-Connection-String": make_app_url(), "Poolgate-Transaction": transaction}
    for key in (None, "not-a-key-of-this-fleet-000"):
        sent = {**inside, **({"Authorization": f"Bearer {key}"} if key else {})}
        refused = httpx.post(f"{other.url}/sql", json={"query": "SELECT 1"}, headers=sent)
        assert refused.status_code == 401
    served = in_transaction(other.url, transaction, "SELECT 1 AS one")
    assert served.status_code == 200 and served.json()["rows"] == [{"one": 1}]
    commit = httpx.post(f"{other.url}/transaction/{transaction}/commit", headers=HEADERS)
    assert commit.status_code == 200


def test_many_calls_forwarded_at_once_all_arrive(fleet: Fleet) -> None:
    holder, other = fleet.replicas
    transactions = [open_transaction(holder.url) for _ in range(4)]
    answers: list[int] = []

    def calls(transaction: str) -> None:
        inside = {**HEADERS, "Poolgate-Transaction": transaction}
        with httpx.Client(base_url=other.url, headers=inside, timeout=30) as client:
            for n in range(10):
                query = {"query": "SELECT $1::int AS n", "params": [n]}
                answers.append(client.post("/sql", json=query).status_code)
            client.post(f"/transaction/{transaction}/commit")

    threads = [threading.Thread(target=calls, args=(t,)) for t in transactions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 40


def test_a_forwarded_call_is_logged_by_both_replicas_under_the_holders_request_id(
    fleet: Fleet,
) -> None:
    holder, other = fleet.replicas
    transaction = open_transaction(holder.url)
    answer = in_transaction(other.url, transaction, "SELECT 1")
    assert answer.status_code == 200
    request_id = answer.headers["Neon-Request-Id"]
    [there] = [
        line for line in holder.log_once_it_has(request_id).splitlines() if request_id in line
    ]
    [here] = [line for line in other.log_once_it_has(request_id).splitlines() if request_id in line]
    assert json.loads(there)["outcome"] == "ok"
    assert json.loads(here)["outcome"] == "forwarded" and json.loads(here)["status"] == 200
    metrics = httpx.get(f"{other.url}/metrics", headers=HEADERS).text
    assert 'poolgate_forwarded_calls_total{outcome="forwarded"}' in metrics
    httpx.post(f"{holder.url}/transaction/{transaction}/rollback", headers=HEADERS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--cache", "memory"), "--advertise-url needs --cache redis://"),
        (("--cache", "off"), "--advertise-url needs --cache redis://"),
        (("--cache", "redis://127.0.0.1:1/0", "--advertise-url", "https://h:1"), "http:// URL"),
        (("--cache", "redis://127.0.0.1:1/0", "--advertise-url", "http://h"), "host:port"),
        (("--cache", "redis://127.0.0.1:1/0", "--advertise-url", "http://h:1/x"), "host:port"),
        (("--cache", "redis://127.0.0.1:1/0", "--advertise-url", "http://0.0.0.0:1"), "wildcard"),
    ],
)
def test_advertise_url_is_refused_without_a_shared_redis_or_in_a_wrong_shape(
    options: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    if "--advertise-url" not in options:
        options = (*options, "--advertise-url", "http://127.0.0.1:4444")
    result = run_serve("--upstream", "postgresql://127.0.0.1:1", *options)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_over_https_the_hop_verifies_the_holders_certificate(
    gateways: GatewayFactory, redis_url: str, tmp_path: Path
) -> None:
    certificates = Certificates(tmp_path)
    tls = ("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key))

    def replica(trusted: Path) -> Gateway:
        port = free_port()
        return gateways(
            *tls,
            *("--workers", "1", "--cache", replica_redis(redis_url)),
            *("--advertise-url", f"https://127.0.0.1:{port}", "--api-keys", API_KEY),
            port=port,
            env={"SSL_CERT_FILE": str(trusted)},
            ca_file=str(certificates.ca_file),
        )

    trusting, distrusting = replica(certificates.ca_file), replica(certificates.other_ca_file)
    verify = ssl.create_default_context(cafile=str(certificates.ca_file))
    try:
        with httpx.Client(headers=HEADERS, verify=verify, timeout=30) as client:
            there = client.post(f"{distrusting.url}/transaction", json={}).json()["id"]
            served = client.post(
                f"{trusting.url}/sql", json={"query": "SELECT 1"}, headers={TX: there}
            )
            assert served.status_code == 200, served.text
            # a holder whose certificate it cannot verify is one it cannot reach: the log
            # says why
            here = client.post(f"{trusting.url}/transaction", json={}).json()["id"]
            refused = client.post(
                f"{distrusting.url}/sql", json={"query": "SELECT 1"}, headers={TX: here}
            )
            assert refused.status_code == 410
            assert "certificate" in distrusting.log_once_it_has("replica_unreachable")
            for transaction in (there, here):
                ended = client.post(f"{trusting.url}/transaction/{transaction}/commit")
                assert ended.status_code == 200
    finally:
        trusting.stop()
        distrusting.stop()


def test_while_redis_is_down_calls_of_another_replica_answer_503_and_work_once_it_is_back(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    redis, process = start_redis(tmp_path)
    port = int(redis.rsplit(":", 1)[1].split("/")[0])
    holder, other = (start_replica(gateways, redis, "--api-keys", API_KEY, workers=1) for _ in "ab")
    try:
        transaction = open_transaction(holder.url)
        process.terminate()
        process.wait(timeout=10)
        down = in_transaction(other.url, transaction, "SELECT 1")
        assert down.status_code == 503 and down.headers["Retry-After"], down.text
        mine = in_transaction(holder.url, transaction, "SELECT 2 AS two")
        assert mine.status_code == 200  # what a replica holds itself goes on
        _, process = start_redis(tmp_path, port)  # empty: the holder registers again
        deadline = time.monotonic() + 30
        while (
            back := in_transaction(other.url, transaction, "SELECT 3 AS three")
        ).status_code != 200:
            assert back.status_code == 410 and time.monotonic() < deadline, back.text
            time.sleep(0.1)
        assert back.json()["rows"] == [{"three": 3}]
        ended = httpx.post(f"{other.url}/transaction/{transaction}/commit", headers=HEADERS)
        assert ended.status_code == 200
    finally:
        holder.stop()
        other.stop()
        process.terminate()
        process.wait(timeout=10)


def test_a_large_call_is_streamed_to_the_holder_and_its_answer_relayed_whole(
    fleet: Fleet,
) -> None:
    holder, other = fleet.replicas
    transaction = open_transaction(holder.url)
    text = "é" * 1_500_000  # 3 MB of UTF-8 each way
    answer = in_transaction(other.url, transaction, "SELECT length($1::text) AS n, $1 AS t", text)
    assert answer.status_code == 200
    assert answer.json()["rows"] == [{"n": len(text), "t": text}]
    httpx.post(f"{holder.url}/transaction/{transaction}/rollback", headers=HEADERS)


def test_a_holder_that_takes_the_call_and_never_answers_is_answered_504_by_the_deadline(
    gateways: GatewayFactory, redis_url: str
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        name = "0123456789ab"
        register(redis_url, name, f"http://127.0.0.1:{silent.getsockname()[1]}")
        forwarder = start_replica(
            gateways,
            replica_redis(redis_url),
            *("--api-keys", API_KEY, "--statement-timeout", "1"),
            workers=1,
        )
        try:
            answer = in_transaction(forwarder.url, f"0.{name}.{'x' * 32}", "SELECT 1")
            assert answer.status_code == 504  # its deadline: --statement-timeout + 1 s
            assert "did not answer in time" in answer.json()["message"]
        finally:
            forwarder.stop()


def test_three_replicas_behind_the_balancer_serve_one_transaction_together(
    gateways: GatewayFactory, redis_url: str, tmp_path: Path, schema: None
) -> None:
    redis = replica_redis(redis_url)
    three = [start_replica(gateways, redis, "--api-keys", API_KEY, workers=1) for _ in "abc"]
    balancer = start_haproxy(
        tmp_path, {f"r{n}": r.url.removeprefix("http://") for n, r in enumerate(three)}
    )
    try:
        with httpx.Client(base_url=balancer.url, headers=HEADERS, timeout=30) as client:
            transaction = client.post("/transaction", json={}).json()["id"]
            inside = {"Poolgate-Transaction": transaction}
            insert = "INSERT INTO logs (level, message) VALUES ('info', 'three-replicas')"
            for _ in range(6):  # twice round the three
                assert (
                    client.post("/sql", json={"query": insert}, headers=inside).status_code == 200
                )
            assert client.post(f"/transaction/{transaction}/commit").status_code == 200
            count = "SELECT count(*)::int AS n FROM logs WHERE message = 'three-replicas'"
            assert client.post("/sql", json={"query": count}).json()["rows"] == [{"n": 6}]
        # the holder forwarded nothing, each of the other two forwarded some of the calls
        forwarded = sorted(forwarded_calls(replica) for replica in three)
        assert forwarded[0] == 0 and forwarded[1] >= 1, forwarded
    finally:
        balancer.stop()
        for replica in three:
            replica.stop()


def test_prisma_accelerates_transactions_are_forwarded_to_the_replica_holding_them(
    gateways: GatewayFactory, redis_url: str, tmp_path: Path, postgres: EmbeddedPostgres
) -> None:
    table = "replica_accelerate_notes"
    with postgres.admin("appdb") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        conn.execute(f"ALTER TABLE {table} OWNER TO {APP_USER}")
    key = "acc_" + "ab" * 16
    keys = tmp_path / "accelerate-keys"
    keys.write_text(keys_line(key) + "\n")
    keys.chmod(0o600)
    accelerate = (
        *("--accelerate-keys-file", str(keys), "--accelerate-node", node_toolchain.node()),
        *("--accelerate-node-modules", str(node_toolchain.ROOT / "node_modules")),
    )
    holder, other = (
        start_replica(gateways, replica_redis(redis_url), *accelerate, workers=1) for _ in "ab"
    )
    prisma = {
        "Authorization": f"Bearer {key}",
        "Prisma-Engine-Hash": SUPPORTED_CLIENT,
        "Content-Type": "application/json",
    }

    def insert(row: int) -> dict[str, object]:
        sql = f'INSERT INTO "public"."{table}" (id) VALUES ($1)'
        arg_types = [{"scalarType": "int", "arity": "scalar"}]
        raw = {"type": "rawSql", "sql": sql, "args": [row], "argTypes": arg_types}
        return {"operation": "executeRaw", "plan": {"type": "execute", "args": raw}, "params": {}}

    try:
        with httpx.Client(headers=prisma, timeout=30) as client:
            tx = client.post(f"{holder.url}/transaction/start", json={}).json()["id"]
            assert tx.count(".") == 2  # <worker>.<replica>.<Prisma's id>
            ran = client.post(f"{other.url}/transaction/{tx}/query", json=insert(1))
            assert ran.status_code == 200, ran.text
            # a savepoint, asked of the other replica, is taken by the holder
            nested = client.post(f"{other.url}/transaction/start", json={"newTxId": tx})
            assert nested.status_code == 200, nested.text
            assert (
                client.post(f"{other.url}/transaction/{tx}/query", json=insert(2)).status_code
                == 200
            )
            assert client.post(f"{other.url}/transaction/{tx}/rollback").status_code == 200
            assert client.post(f"{other.url}/transaction/{tx}/commit").status_code == 200
            with postgres.admin("appdb") as conn:
                assert conn.execute(f"SELECT id FROM {table}").fetchall() == [(1,)]
            # a holder gone: Prisma's P2028, in Prisma's shape
            gone = client.post(f"{holder.url}/transaction/start", json={}).json()["id"]
            holder.process.send_signal(signal.SIGINT)
            holder.process.wait(timeout=60)
            answer = client.post(f"{other.url}/transaction/{gone}/query", json=insert(3))
            assert answer.status_code == 410 and answer.json()["code"] == "P2028", answer.text
    finally:
        holder.stop()
        other.stop()
