"""Interactive transactions (PROTOCOL.md, "Interactive transactions"), row by row,
against a real gateway process and Postgres."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.gateway.test_pool import make_role
from tests.support.services import (
    Gateway,
    GatewayFactory,
    server_connections,
    wait_until_not_running,
)

ROLE = "tx_user"


@pytest.fixture(scope="module")
def url(postgres: EmbeddedPostgres) -> Iterator[str]:
    role_url = make_role(postgres, ROLE)
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS tx_items")
        conn.execute("CREATE TABLE tx_items (id int PRIMARY KEY, label text)")
        conn.execute(f"GRANT ALL ON tx_items TO {ROLE}")
    yield role_url


@pytest.fixture(autouse=True)
def empty_table(postgres: EmbeddedPostgres, url: str) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("TRUNCATE tx_items")


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory) -> Gateway:
    return gateways("--pool-size", "4")


class Client:
    """The protocol's calls, as a driver would make them."""

    def __init__(self, gateway: Gateway, url: str) -> None:
        self.base = gateway.url
        self.url = url

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        sent = {"Neon-Connection-String": self.url, **headers}
        content = None if body is None else httpx.Request("POST", "/", json=body).content
        return httpx.post(f"{self.base}{path}", content=content, headers=sent, timeout=30)

    def begin(self, body: Any = None, **headers: str) -> str:
        reply = self.post("/transaction", body, **headers)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def sql(self, tx: str | None, query: str, *params: Any, **headers: str) -> httpx.Response:
        if tx is not None:
            headers["Poolgate-Transaction"] = tx
        return self.post("/sql", {"query": query, "params": list(params)}, **headers)

    def commit(self, tx: str, **headers: str) -> httpx.Response:
        return self.post(f"/transaction/{tx}/commit", **headers)

    def rollback(self, tx: str) -> httpx.Response:
        return self.post(f"/transaction/{tx}/rollback")

    def labels(self) -> list[str]:
        rows = self.sql(None, "SELECT label FROM tx_items ORDER BY id").json()["rows"]
        return [row["label"] for row in rows]


@pytest.fixture
def client(gw: Gateway, url: str) -> Client:
    return Client(gw, url)


def test_begin_answers_201_with_an_opaque_id_and_an_expiry(client: Client) -> None:
    sent = time.time()
    reply = client.post("/transaction", {"timeout_ms": 3000})
    answered = time.time()
    assert reply.status_code == 201
    opened = reply.json()
    token = opened["id"].partition(".")[2]
    assert len(token) >= 32  # 24 random bytes, URL-safe base64: 192 bits
    assert opened["expires_at"].endswith("Z")
    expires = datetime.fromisoformat(opened["expires_at"].replace("Z", "+00:00")).timestamp()
    # 3 s after the gateway ran BEGIN, which it did between the test's send and answer
    # (the same clock; expires_at is cut to milliseconds)
    assert sent + 3 - 0.001 <= expires <= answered + 3
    assert client.rollback(opened["id"]).json() == {"rolled_back": True}


def test_statements_inside_see_their_own_writes_and_others_see_them_after_commit(
    client: Client,
) -> None:
    tx = client.begin()
    assert client.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')").json()["rowCount"] == 1
    inside = client.sql(tx, "SELECT label FROM tx_items").json()["rows"]
    assert inside == [{"label": "a"}]
    assert client.labels() == []  # not committed yet
    reply = client.commit(tx)
    assert reply.status_code == 200 and reply.json() == {"committed": True}
    assert client.labels() == ["a"]


def test_rollback_undoes_every_statement(client: Client) -> None:
    tx = client.begin()
    client.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')")
    batch = {"queries": [{"query": "INSERT INTO tx_items VALUES (2, 'b')"}, {"query": "SELECT 1"}]}
    assert len(client.post("/sql", batch, **{"Poolgate-Transaction": tx}).json()["results"]) == 2
    assert client.rollback(tx).json() == {"rolled_back": True}
    assert client.labels() == []


def test_isolation_read_only_and_deferrable_headers_shape_the_transaction(client: Client) -> None:
    tx = client.begin(
        **{"Neon-Batch-Isolation-Level": "Serializable", "Neon-Batch-Read-Only": "true"}
    )
    shown = client.sql(tx, "SHOW transaction_isolation").json()["rows"]
    assert shown == [{"transaction_isolation": "serializable"}]
    refused = client.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')")
    assert refused.status_code == 400 and refused.json()["code"] == "25006"
    client.rollback(tx)


@pytest.mark.parametrize(
    "body",
    [{"timeout_ms": 15_001}, {"timeout_ms": 0}, {"timeout_ms": "5"}, {"other": 1}, [1]],
)
def test_a_timeout_over_the_maximum_or_a_malformed_body_is_400(client: Client, body: Any) -> None:
    reply = client.post("/transaction", body)
    assert reply.status_code == 400 and "message" in reply.json()


def test_after_an_error_statements_answer_25P02_and_commit_is_refused_but_rollback_works(
    client: Client,
) -> None:
    tx = client.begin()
    client.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')")
    assert client.sql(tx, "SELECT 1/0").json()["code"] == "22012"
    assert client.sql(tx, "SELECT 1").json()["code"] == "25P02"
    refused = client.commit(tx)
    assert refused.status_code == 400 and refused.json()["code"] == "25P02"
    assert client.commit(tx).status_code == 404  # gone: it was rolled back
    assert client.labels() == []
    tx = client.begin()
    client.sql(tx, "SELECT 1/0")
    assert client.rollback(tx).json() == {"rolled_back": True}


def test_unknown_finished_and_other_peoples_transactions_get_the_same_404(
    client: Client, gw: Gateway, postgres: EmbeddedPostgres
) -> None:
    other = Client(gw, make_role(postgres, "tx_other"))
    tx = client.begin()
    wrong_password = Client(gw, client.url.replace(f"pw-{ROLE}", "not-the-password"))
    answers = [
        other.sql(tx, "SELECT 1"),
        other.commit(tx),
        other.rollback(tx),
        wrong_password.sql(tx, "SELECT 1"),
        client.sql("0.unknown", "SELECT 1"),
        client.commit("no-such-id"),
    ]
    assert client.commit(tx).status_code == 200  # the others never touched it
    answers += [client.commit(tx), client.rollback(tx), client.sql(tx, "SELECT 1")]
    assert {(a.status_code, a.text) for a in answers} == {
        (404, '{"message": "no such transaction"}')
    }


def test_an_expired_transaction_is_rolled_back_its_connection_reused_and_answers_410(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, url: str
) -> None:
    own_role = make_role(postgres, "tx_expiry")
    with postgres.admin("appdb") as conn:
        conn.execute("GRANT ALL ON tx_items TO tx_expiry")
    single = Client(gateways("--pool-size", "1", "--workers", "1"), own_role)
    tx = single.begin({"timeout_ms": 300})
    single.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')")
    time.sleep(0.6)
    expired = single.sql(tx, "SELECT 1")
    assert expired.status_code == 410 and expired.json() == {"message": "transaction expired"}
    assert single.commit(tx).status_code == 410
    assert single.labels() == []  # rolled back; and the only connection serves again
    assert server_connections(postgres, "tx_expiry") == 1
    metrics = httpx.get(f"{single.base}/metrics").text.splitlines()
    assert "poolgate_transactions_expired_total 1.0" in metrics
    assert "poolgate_transactions_open 0.0" in metrics
    assert "poolgate_transaction_duration_seconds_count 1.0" in metrics


def test_a_second_call_while_one_runs_is_409(client: Client) -> None:
    tx = client.begin()
    slow = threading.Thread(target=client.sql, args=(tx, "SELECT pg_sleep(0.5)"))
    slow.start()
    time.sleep(0.15)
    busy = client.sql(tx, "SELECT 1")
    slow.join()
    assert busy.status_code == 409
    assert client.sql(tx, "SELECT 1").status_code == 200
    client.rollback(tx)


def test_reserved_connections_count_against_the_pool_size(
    gateways: GatewayFactory, url: str
) -> None:
    small = Client(gateways("--pool-size", "2", "--workers", "1", "--acquire-timeout", "0.3"), url)
    first, second = small.begin(), small.begin()
    busy = small.post("/transaction", {"max_wait_ms": 200})
    assert busy.status_code == 503 and "Retry-After" in busy.headers
    assert small.sql(None, "SELECT 1").status_code == 503  # nothing left for plain requests
    small.rollback(first)
    assert small.sql(None, "SELECT 1").status_code == 200
    small.rollback(second)


def test_a_client_gone_mid_statement_cancels_it_and_rolls_the_transaction_back(
    client: Client, postgres: EmbeddedPostgres
) -> None:
    tx = client.begin({"timeout_ms": 10_000})
    client.sql(tx, "INSERT INTO tx_items VALUES (1, 'a')")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{client.base}/sql",
            json={"query": "SELECT pg_sleep(20) /* tx-gone */"},
            headers={"Neon-Connection-String": client.url, "Poolgate-Transaction": tx},
            timeout=0.5,
        )
    assert wait_until_not_running(postgres, "tx-gone", seconds=15) == 0  # of its 20 s
    assert client.sql(tx, "SELECT 1").status_code == 404
    assert client.labels() == []


def test_cache_headers_are_refused_inside_a_transaction(client: Client) -> None:
    tx = client.begin()
    for header in ("Poolgate-Cache-TTL", "Poolgate-Invalidate-Tags", "Poolgate-Cache-Tags"):
        reply = client.sql(tx, "SELECT 1", **{header: "60" if "TTL" in header else "t"})
        assert reply.status_code == 400 and "inside a transaction" in reply.json()["message"]
    client.rollback(tx)


def test_invalidation_tags_are_applied_when_the_commit_is(client: Client) -> None:
    client.sql(None, "INSERT INTO tx_items VALUES (1, 'old')")
    cached = {"Poolgate-Cache-TTL": "600", "Poolgate-Cache-Tags": "tx_items"}
    read = "SELECT label FROM tx_items WHERE id = 1"
    assert client.sql(None, read, **cached).json()["rows"] == [{"label": "old"}]
    tx = client.begin()
    client.sql(tx, "UPDATE tx_items SET label = 'new' WHERE id = 1")
    assert client.sql(None, read, **cached).json()["rows"] == [{"label": "old"}]  # uncommitted
    committed = client.commit(tx, **{"Poolgate-Invalidate-Tags": "tx_items"})
    assert committed.status_code == 200 and "Poolgate-Invalidate-Status" not in committed.headers
    after = client.sql(None, read, **cached)
    assert after.json()["rows"] == [{"label": "new"}]
    assert after.headers["Poolgate-Cache-Status"] == "miss"


def test_transactions_work_across_workers_whichever_one_a_call_reaches(
    gateways: GatewayFactory, url: str
) -> None:
    """Each call on a new connection, so the kernel spreads them over both workers; the
    ones that reach the other worker are forwarded to the one holding the transaction."""
    spread = Client(gateways("--workers", "2", "--pool-size", "4"), url)
    for n in range(6):
        tx = spread.begin()
        for k in range(4):
            spread.sql(tx, "INSERT INTO tx_items VALUES ($1, 'w')", n * 10 + k)
        assert spread.sql(tx, "SELECT count(*) AS n FROM tx_items").json()["rows"][0]["n"] == str(
            n * 4 + 4
        )
        assert spread.commit(tx).status_code == 200
    assert len(spread.labels()) == 24


def test_a_commit_that_fails_serialization_is_400_40001_and_the_transaction_is_gone(
    client: Client,
) -> None:
    """Write skew under Serializable: each reads what the other writes; the second to
    commit is refused by Postgres at its commit."""
    serializable = {"Neon-Batch-Isolation-Level": "Serializable"}
    first, second = client.begin(**serializable), client.begin(**serializable)
    for tx in (first, second):
        assert client.sql(tx, "SELECT count(*) FROM tx_items").status_code == 200
    for tx, n in ((first, 1), (second, 2)):
        assert client.sql(tx, "INSERT INTO tx_items VALUES ($1, 'skew')", n).status_code == 200
    assert client.commit(first).json() == {"committed": True}
    refused = client.commit(second)
    assert refused.status_code == 400 and refused.json()["code"] == "40001"
    assert client.commit(second).status_code == 404
    assert client.labels() == ["skew"]


def test_currval_inside_reads_the_transactions_own_nextval_never_an_earlier_requests(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, url: str
) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute("DROP SEQUENCE IF EXISTS tx_seq")
        conn.execute("CREATE SEQUENCE tx_seq")
        conn.execute(f"GRANT ALL ON tx_seq TO {ROLE}")
    single = Client(gateways("--pool-size", "1", "--workers", "1"), url)
    single.sql(None, "SELECT nextval('tx_seq')")  # leaves sequence state in the session
    tx = single.begin()
    assert single.sql(tx, "SELECT currval('tx_seq')").json()["code"] == "55000"
    single.rollback(tx)
    tx = single.begin()
    made = single.sql(tx, "SELECT nextval('tx_seq')::text AS n").json()["rows"][0]["n"]
    read = single.sql(tx, "SELECT currval('tx_seq')::text AS n").json()["rows"][0]["n"]
    assert made == read
    single.commit(tx)


@pytest.fixture
def slow_commit_table(postgres: EmbeddedPostgres, url: str) -> str:
    """A table whose commit takes 0.8 s: a deferred constraint trigger sleeps at COMMIT."""
    with postgres.admin("appdb") as conn:
        conn.execute("DROP TABLE IF EXISTS tx_slow")
        conn.execute("CREATE TABLE tx_slow (id int PRIMARY KEY)")
        conn.execute(
            "CREATE OR REPLACE FUNCTION tx_slow_check() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN PERFORM pg_sleep(0.8); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER tx_slow_commit AFTER INSERT ON tx_slow"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tx_slow_check()"
        )
        conn.execute(f"GRANT ALL ON tx_slow TO {ROLE}")
    return "tx_slow"


def test_a_commit_sent_before_expiry_is_answered_by_its_outcome_not_by_the_expiry_timer(
    client: Client, postgres: EmbeddedPostgres, slow_commit_table: str
) -> None:
    """The commit's trigger outlasts the transaction's 300 ms: once COMMIT is sent, the
    answer is what Postgres did with it (200, the row is there), never 410."""
    tx = client.begin({"timeout_ms": 300})
    assert client.sql(tx, f"INSERT INTO {slow_commit_table} VALUES (1)").status_code == 200
    committed = client.commit(tx)
    with postgres.admin("appdb") as conn:
        rows = conn.execute(f"SELECT id FROM {slow_commit_table}").fetchall()
    assert (committed.status_code, committed.json()) == (200, {"committed": True})
    assert rows == [(1,)]
    assert client.commit(tx).status_code == 404  # finished, not expired


def test_max_wait_ms_bounds_the_wait_for_the_gateways_connection_budget_too(
    gateways: GatewayFactory, postgres: EmbeddedPostgres, url: str
) -> None:
    """The gateway's only server connection (--max-connections 1) is held by another
    role's transaction; acquire timeout and deadline are a minute. A begin asking to
    wait 300 ms is 503 while that transaction is still open, not a minute later."""
    gateway = gateways(
        "--max-connections", "1", "--workers", "1", "--acquire-timeout", "60",
        "--statement-timeout", "60", "--transaction-timeout-max", "30",
    )  # fmt: skip
    other = Client(gateway, make_role(postgres, "tx_budget_holder"))
    holder = other.begin({"timeout_ms": 20_000})
    waiting = Client(gateway, url).post("/transaction", {"max_wait_ms": 300})
    assert waiting.status_code == 503 and "Retry-After" in waiting.headers
    assert other.sql(holder, "SELECT 1").status_code == 200  # still open: answered in time
    assert other.rollback(holder).status_code == 200
