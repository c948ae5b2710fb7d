"""The Accelerate face spoken to directly, as Prisma's client speaks it (its plans written
by hand here; tests/gateway/test_prisma_accelerate.py drives Prisma's real client): the
key as the whole boundary, the client version, the bounds, hostile plans, transactions,
the cache in front of reads and the invalidation after writes, and the companion's
supervision. A real gateway (two workers), its companion and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.accelerate import AccelerateEndpoint, keys_line, start_accelerate
from tests.support.services import APP_USER, GatewayFactory, make_app_url, run_serve

TABLE = "accelerate_face_item"
SQL_API_KEY = "sql-key-0123456789abcdef"
NO_INVALIDATION_KEY = "acc_no_model_invalidation_0123"


@pytest.fixture(scope="module")
def endpoint(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory, postgres: EmbeddedPostgres
) -> AccelerateEndpoint:
    with postgres.admin("appdb") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, note text NOT NULL)")
        conn.execute(f"ALTER TABLE {TABLE} OWNER TO {APP_USER}")
    return start_accelerate(
        gateways,
        tmp_path_factory.mktemp("accelerate"),
        "--workers",
        "2",
        "--api-keys",
        SQL_API_KEY,
        "--statement-timeout",
        "2",
        "--transaction-timeout-max",
        "5",
        "--max-request-bytes",
        "200000",
        "--max-response-bytes",
        "5000000",
        extra_lines=(f"{keys_line(NO_INVALIDATION_KEY)} model-invalidation=off",),
    )


@pytest.fixture()
def client(endpoint: AccelerateEndpoint) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.base, headers=endpoint.headers(), timeout=30) as http:
        yield http


def raw(sql: str, *args: Any, kind: str = "query") -> dict[str, Any]:
    """A plan as Prisma compiles `$queryRaw` (kind "query") or `$executeRaw` ("execute")."""
    types = [
        {"scalarType": "int" if isinstance(a, int) else "string", "arity": "scalar"} for a in args
    ]
    return {
        "operation": "queryRaw" if kind == "query" else "executeRaw",
        "plan": {
            "type": kind,
            "args": {"type": "rawSql", "sql": sql, "args": list(args), "argTypes": types},
        },
        "params": {},
    }


def rows(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 200, response.text
    result: list[list[Any]] = response.json()["data"]["rows"]
    return result


def notes(client: httpx.Client, **headers: str) -> tuple[list[list[Any]], str]:
    answer = client.post(
        "/query", json=raw(f'SELECT id, note FROM "public"."{TABLE}" ORDER BY id'), headers=headers
    )
    return rows(answer), answer.headers["accelerate-cache-status"]


def insert(client: httpx.Client, row_id: int, note: str, path: str = "/query") -> None:
    answer = client.post(
        path,
        json=raw(
            f'INSERT INTO "public"."{TABLE}" (id, note) VALUES ($1, $2)',
            row_id,
            note,
            kind="execute",
        ),
    )
    assert answer.status_code == 200, answer.text


def refusal(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    message: str = body["error"]
    return message


def stored(postgres: EmbeddedPostgres) -> list[tuple[Any, ...]]:
    with postgres.admin("appdb") as conn:
        return conn.execute(f"SELECT id, note FROM {TABLE} ORDER BY id").fetchall()


def test_connection_info_says_postgres_with_relation_joins(client: httpx.Client) -> None:
    answer = client.get("/connection-info")
    assert answer.status_code == 200
    assert answer.json() == {
        "provider": "postgres",
        "connectionInfo": {"supportsRelationJoins": True},
    }


def test_a_plan_runs_on_the_pool_and_comes_back_typed(client: httpx.Client) -> None:
    answer = client.post(
        "/query", json=raw("SELECT $1::int + 1 AS n, current_user::text AS who", 41)
    )
    assert answer.json()["data"] == {
        "columns": ["n", "who"],
        "types": ["int", "string"],
        "rows": [[42, APP_USER]],
    }
    assert answer.headers["accelerate-cache-status"] == "none"


def test_a_wrong_key_is_refused_before_anything_runs(
    endpoint: AccelerateEndpoint, postgres: EmbeddedPostgres
) -> None:
    for key in ("acc_wrong_0123456789abcdef", SQL_API_KEY):
        answer = httpx.post(
            f"{endpoint.base}/query",
            json=raw(f"INSERT INTO {TABLE} VALUES (999, 'never')", kind="execute"),
            headers=endpoint.headers(key=key),
        )
        refusal(answer, 401, "P6002")
        assert answer.headers["Prisma-Error-Code"] == "P6002"
    assert (999, "never") not in stored(postgres)


def test_an_accelerate_key_never_opens_sql(endpoint: AccelerateEndpoint) -> None:
    answer = httpx.post(
        f"{endpoint.base}/sql",
        json={"query": "SELECT 1", "params": []},
        headers={
            "Authorization": f"Bearer {endpoint.api_key}",
            "Neon-Connection-String": make_app_url(),
        },
    )
    assert answer.status_code == 401
    sql_key = {"Authorization": f"Bearer {SQL_API_KEY}", "Neon-Connection-String": make_app_url()}
    assert (
        httpx.post(
            f"{endpoint.base}/sql", json={"query": "SELECT 1", "params": []}, headers=sql_key
        ).status_code
        == 200
    )


def test_wrong_keys_from_one_address_are_throttled_and_the_right_key_is_not(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    own = start_accelerate(gateways, tmp_path)  # its throttle counts only this test's tries
    wrong = own.headers(key="acc_guess_0123456789abcdef")
    statuses = [
        httpx.get(f"{own.base}/connection-info", headers=wrong).status_code for _ in range(12)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    throttled = httpx.get(f"{own.base}/connection-info", headers=wrong)
    refusal(throttled, 429, "P5011")
    assert int(throttled.headers["Retry-After"]) >= 1
    assert httpx.get(f"{own.base}/connection-info", headers=own.headers()).status_code == 200


def test_a_client_of_another_version_gets_an_error_naming_the_supported_ones(
    endpoint: AccelerateEndpoint,
) -> None:
    for version in ("6.19.0", "7.11.0", ""):
        answer = httpx.get(
            f"{endpoint.base}/connection-info", headers=endpoint.headers(version=version)
        )
        message = refusal(answer, 400, "P6006")
        assert "7.10.0, 7.10.1" in message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "nests deeper"),
        (
            b'{"operation": "findMany", "plan": '
            + b'{"a":' * 10_000
            + b"1"
            + b"}" * 10_000
            + b', "params": {}}',
            "nests deeper",
        ),
        (b"not json", "not valid JSON"),
        (b'{"operation": "findMany", "plan": [], "params": {}}', '"plan" and "params"'),
        (b'{"plan": {}, "params": {}}', '"operation"'),
    ],
    ids=["deep-array", "deep-plan", "not-json", "plan-not-object", "no-operation"],
)
def test_a_malformed_body_is_refused_with_p6005(
    client: httpx.Client, body: bytes, fragment: str
) -> None:
    assert fragment in refusal(client.post("/query", content=body), 400, "P6005")


def test_a_string_holding_a_lone_surrogate_is_refused_not_stored_as_something_else(
    client: httpx.Client, postgres: EmbeddedPostgres
) -> None:
    body = json.dumps(raw(f"INSERT INTO {TABLE} VALUES (301, $1)", "\ud800", kind="execute"))
    assert "\\ud800" in body  # json.dumps spells it as an escape, as JSON.stringify does
    answer = client.post("/query", content=body.encode())
    assert "lone surrogate" in refusal(answer, 400, "P6005")
    assert 301 not in [row[0] for row in stored(postgres)]


def test_a_plan_with_an_unknown_node_type_is_refused_not_a_server_error(
    client: httpx.Client,
) -> None:
    answer = client.post(
        "/query", json={"operation": "findMany", "plan": {"type": "launchMissiles"}, "params": {}}
    )
    assert "launchMissiles" in refusal(answer, 400, "P6005")


def test_a_parameter_of_the_wrong_type_is_a_prisma_error_not_a_server_error(
    client: httpx.Client,
) -> None:
    answer = client.post("/query", json=raw("SELECT $1::int AS n", "not a number"))
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["code"].startswith("P")


def test_a_body_over_the_size_limit_is_refused(client: httpx.Client) -> None:
    answer = client.post("/query", content=b'{"x": "' + b"a" * 300_000 + b'"}')
    refusal(answer, 413, "P6005")


def test_a_large_result_comes_back_whole_and_one_past_the_limit_is_refused(
    client: httpx.Client,
) -> None:
    assert rows(client.post("/query", json=raw("SELECT repeat('x', 3000000) AS s"))) == [
        ["x" * 3_000_000]
    ]
    refusal(client.post("/query", json=raw("SELECT repeat('x', 6000000) AS s")), 507, "P6009")


def test_a_statement_past_the_statement_timeout_is_cancelled_with_a_prisma_error(
    client: httpx.Client,
) -> None:
    answer = client.post("/query", json=raw("SELECT pg_sleep(10)"))
    assert 400 <= answer.status_code < 500, answer.text
    assert "57014" in answer.text or "cancel" in answer.text.lower()


def test_an_interactive_transaction_commits_in_the_isolation_level_asked(
    client: httpx.Client, postgres: EmbeddedPostgres
) -> None:
    started = client.post(
        "/transaction/start", json={"isolationLevel": "SERIALIZABLE", "timeout": 4000}
    )
    tx = started.json()["id"]
    assert started.headers["Prisma-Transaction-Id"] == tx
    assert rows(
        client.post(f"/transaction/{tx}/query", json=raw("SHOW transaction_isolation"))
    ) == [["serializable"]]
    insert(client, 101, "in a transaction", f"/transaction/{tx}/query")
    assert (101, "in a transaction") not in stored(postgres)
    assert client.post(f"/transaction/{tx}/commit").json() == {}
    assert (101, "in a transaction") in stored(postgres)
    refusal(client.post(f"/transaction/{tx}/commit"), 409, "P2028")


def test_a_rolled_back_transaction_keeps_nothing_and_a_savepoint_keeps_the_outer_work(
    client: httpx.Client, postgres: EmbeddedPostgres
) -> None:
    tx = client.post("/transaction/start", json={}).json()["id"]
    insert(client, 111, "outer", f"/transaction/{tx}/query")
    nested = client.post("/transaction/start", json={"newTxId": tx})
    assert nested.status_code == 200, nested.text
    insert(client, 112, "inner", f"/transaction/{tx}/query")
    assert client.post(f"/transaction/{tx}/rollback").status_code == 200  # to the savepoint
    assert client.post(f"/transaction/{tx}/commit").status_code == 200
    ids = [row[0] for row in stored(postgres)]
    assert 111 in ids and 112 not in ids
    tx = client.post("/transaction/start", json={}).json()["id"]
    insert(client, 113, "undone", f"/transaction/{tx}/query")
    assert client.post(f"/transaction/{tx}/rollback").status_code == 200
    assert 113 not in [row[0] for row in stored(postgres)]


def test_a_transaction_past_its_timeout_is_rolled_back_and_says_so(
    client: httpx.Client, postgres: EmbeddedPostgres
) -> None:
    tx = client.post("/transaction/start", json={"timeout": 300}).json()["id"]
    insert(client, 121, "too late", f"/transaction/{tx}/query")
    time.sleep(1.0)
    message = refusal(client.post(f"/transaction/{tx}/query", json=raw("SELECT 1")), 409, "P2028")
    assert "expired" in message or "timeout" in message.lower()
    assert 121 not in [row[0] for row in stored(postgres)]


def test_a_transaction_timeout_above_the_gateways_limit_is_capped(client: httpx.Client) -> None:
    tx = client.post("/transaction/start", json={"timeout": 3_600_000}).json()["id"]
    assert rows(client.post(f"/transaction/{tx}/query", json=raw("SELECT 1"))) == [[1]]
    time.sleep(6.0)  # --transaction-timeout-max 5
    refusal(client.post(f"/transaction/{tx}/query", json=raw("SELECT 1")), 409, "P2028")


def test_transaction_options_of_the_wrong_shape_are_refused(client: httpx.Client) -> None:
    for options in ({"isolationLevel": "CHAOS"}, {"timeout": "soon"}, {"newTxId": "../x"}):
        refusal(client.post("/transaction/start", json=options), 400, "P6005")
    refusal(
        client.post("/transaction/no-such-transaction/query", json=raw("SELECT 1")), 409, "P2028"
    )


def test_a_read_with_max_age_is_a_miss_then_a_hit_with_its_date(client: httpx.Client) -> None:
    body = raw("SELECT clock_timestamp()::text AS t, 'ttl' AS k")
    first = client.post("/query", json=body, headers={"cache-control": "max-age=60"})
    second = client.post("/query", json=body, headers={"cache-control": "max-age=60"})
    assert first.headers["accelerate-cache-status"] == "miss"
    assert second.headers["accelerate-cache-status"] == "ttl"
    assert rows(first) == rows(second)
    assert second.headers["last-modified"].endswith("GMT")
    uncached = client.post("/query", json=body, headers={"cache-control": "no-cache"})
    assert uncached.headers["accelerate-cache-status"] == "none" and rows(uncached) != rows(first)


def test_a_stale_read_within_swr_is_served_and_refreshed(client: httpx.Client) -> None:
    body = raw("SELECT clock_timestamp()::text AS t, 'swr' AS k")
    policy = {"cache-control": "max-age=1,stale-while-revalidate=60"}
    first = client.post("/query", json=body, headers=policy)
    time.sleep(1.5)
    stale = client.post("/query", json=body, headers=policy)
    assert (first.headers["accelerate-cache-status"], stale.headers["accelerate-cache-status"]) == (
        "miss",
        "swr",
    )
    assert rows(stale) == rows(first)
    deadline = time.monotonic() + 30
    while rows(client.post("/query", json=body, headers=policy)) == rows(first):  # refreshed behind
        assert time.monotonic() < deadline, "the stale answer was never refreshed"
        time.sleep(0.1)


def test_invalidating_a_tag_drops_its_reads_and_invalidate_all_drops_every_read(
    client: httpx.Client,
) -> None:
    tagged = raw("SELECT clock_timestamp()::text AS t, 'tagged' AS k")
    other = raw("SELECT clock_timestamp()::text AS t, 'other' AS k")
    with_tag = {"cache-control": "max-age=60", "accelerate-cache-tags": "notes_list"}
    plain = {"cache-control": "max-age=60"}
    client.post("/query", json=tagged, headers=with_tag)
    client.post("/query", json=other, headers=plain)
    assert client.post("/invalidate", json={"tags": ["notes_list"]}).status_code == 200
    assert (
        client.post("/query", json=tagged, headers=with_tag).headers["accelerate-cache-status"]
        == "miss"
    )
    assert (
        client.post("/query", json=other, headers=plain).headers["accelerate-cache-status"] == "ttl"
    )
    assert client.post("/invalidate", json={"tags": "all"}).status_code == 200
    assert (
        client.post("/query", json=other, headers=plain).headers["accelerate-cache-status"]
        == "miss"
    )
    refusal(client.post("/invalidate", json={"tags": ["not a tag!"]}), 400, "P6005")


def test_a_write_drops_the_cached_reads_of_its_table_without_any_tag(client: httpx.Client) -> None:
    cached = {"cache-control": "max-age=600"}
    before, _ = notes(client, **cached)
    assert notes(client, **cached) == (before, "ttl")
    insert(client, 201, "written through the endpoint")
    after, status = notes(client, **cached)
    assert status == "miss" and [201, "written through the endpoint"] in after


def test_a_transactions_writes_drop_cached_reads_once_it_commits(client: httpx.Client) -> None:
    cached = {"cache-control": "max-age=600"}
    notes(client, **cached)
    tx = client.post("/transaction/start", json={}).json()["id"]
    insert(client, 211, "committed later", f"/transaction/{tx}/query")
    before_commit, status = notes(client, **cached)
    assert status == "ttl" and [211, "committed later"] not in before_commit
    assert client.post(f"/transaction/{tx}/commit").status_code == 200
    after, status = notes(client, **cached)
    assert status == "miss" and [211, "committed later"] in after


def test_model_invalidation_can_be_turned_off_per_key(endpoint: AccelerateEndpoint) -> None:
    headers = endpoint.headers(key=NO_INVALIDATION_KEY)
    with httpx.Client(base_url=endpoint.base, headers=headers, timeout=30) as client:
        cached = {"cache-control": "max-age=600"}
        before, _ = notes(client, **cached)
        insert(client, 221, "unseen until invalidated")
        assert notes(client, **cached) == (before, "ttl")
        client.post("/invalidate", json={"tags": "all"})
        after, status = notes(client, **cached)
        assert status == "miss" and [221, "unseen until invalidated"] in after


def test_poolgates_own_invalidate_and_transactions_still_answer_beside_accelerates(
    endpoint: AccelerateEndpoint,
) -> None:
    own = {"Authorization": f"Bearer {SQL_API_KEY}", "Neon-Connection-String": make_app_url()}
    answer = httpx.post(f"{endpoint.base}/invalidate", json={"tags": ["x"]}, headers=own)
    assert answer.status_code == 200 and "invalidated" in answer.json()
    opened = httpx.post(f"{endpoint.base}/transaction", json={}, headers=own)
    assert opened.status_code == 201, opened.text
    tx = opened.json()["transaction"] if "transaction" in opened.json() else opened.json()["id"]
    assert httpx.post(f"{endpoint.base}/transaction/{tx}/rollback", headers=own).status_code == 200


def companion_of(endpoint: AccelerateEndpoint) -> psutil.Process:
    children = psutil.Process(endpoint.gateway.process.pid).children()
    (companion,) = [child for child in children if "companion.mjs" in " ".join(child.cmdline())]
    return companion


def test_a_killed_companion_is_restarted_and_serves_again(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    own = start_accelerate(gateways, tmp_path)
    first = companion_of(own)
    first.kill()
    first.wait(timeout=10)
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"{own.base}/connection-info", headers=own.headers())
        if answer.status_code == 200:
            break
        refusal(answer, 503, "P6008")  # meanwhile: retry, with Retry-After
        assert time.monotonic() < deadline, "the companion never came back"
        time.sleep(0.1)
    assert companion_of(own).pid != first.pid
    assert '"event": "companion_died"' in own.gateway.log_text()


async def test_writes_cut_off_by_a_companion_killed_under_them_say_so_and_none_acknowledged_is_lost(
    endpoint: AccelerateEndpoint,  # its fixture makes the table
    gateways: GatewayFactory,
    tmp_path: Path,
    postgres: EmbeddedPostgres,
) -> None:
    own = start_accelerate(gateways, tmp_path)
    companion = companion_of(own)
    answers: dict[int, httpx.Response] = {}
    first_done = asyncio.Event()
    async with httpx.AsyncClient(base_url=own.base, headers=own.headers(), timeout=60) as http:

        async def write(row: int) -> None:
            sql = f"INSERT INTO {TABLE} VALUES ({row}, 'cut')"
            answers[row] = await http.post("/query", json=raw(sql, kind="execute"))
            if answers[row].status_code == 200:
                first_done.set()

        writes = [asyncio.create_task(write(row)) for row in range(1000, 1200)]
        await asyncio.wait_for(first_done.wait(), 60)  # mid-load, however slow the machine
        companion.kill()
        await asyncio.gather(*writes)
    codes = {(a.status_code, a.json().get("code")) for a in answers.values()}
    # done, never reached (try again), or cut off during the call (not said to retry)
    assert codes <= {(200, None), (503, "P6008"), (504, "P6004")}, codes
    kept = {row[0] for row in stored(postgres)}
    acknowledged = {row for row, a in answers.items() if a.status_code == 200}
    assert acknowledged and acknowledged <= kept


def test_the_companion_dies_with_its_supervisor(gateways: GatewayFactory, tmp_path: Path) -> None:
    own = start_accelerate(gateways, tmp_path)
    companion = companion_of(own)
    own.gateway.process.send_signal(signal.SIGKILL)
    own.gateway.process.wait(timeout=10)
    companion.wait(timeout=20)  # its stdin pipe closed: it exits by itself


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ("short postgresql://app:pw@/appdb", "at least 16"),
        ("acc_0123456789abcdef postgresql://app:pw@db.example/appdb", "leave the host out"),
        ("acc_0123456789abcdef postgresql://app@/appdb", "a password"),
        ("acc_0123456789abcdef postgresql://app:pw@/appdb sometimes", "expected"),
        (f"{SQL_API_KEY} postgresql://app:pw@/appdb", "both as an API key"),
        ("# nothing", "lists no key"),
    ],
    ids=["short-key", "host", "no-password", "bad-option", "same-as-api-key", "empty"],
)
def test_a_keys_file_that_cannot_be_used_stops_the_gateway_with_a_reason(
    tmp_path: Path, postgres: EmbeddedPostgres, lines: str, fragment: str
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(lines + "\n")
    result = run_serve(
        *("--upstream", postgres.upstream_url, "--api-keys", SQL_API_KEY),
        *("--accelerate-keys-file", str(keys)),
    )
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr


def test_the_request_log_names_accelerate_calls_and_never_the_key(
    endpoint: AccelerateEndpoint, client: httpx.Client
) -> None:
    client.get("/connection-info")
    log = endpoint.gateway.log_once_it_has('"path": "/connection-info"')
    assert endpoint.api_key not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(
        line.get("path") == "/connection-info" and line.get("status") == 200 for line in lines
    )


def test_past_the_connection_bound_a_query_waits_its_turn_then_is_told_to_retry(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    own = start_accelerate(
        gateways, tmp_path, "--workers", "1", "--pool-size", "2", "--acquire-timeout", "1"
    )
    with httpx.Client(base_url=own.base, headers=own.headers(), timeout=60) as client:
        tx = client.post("/transaction/start", json={"timeout": 20_000}).json()["id"]
        assert rows(client.post(f"/transaction/{tx}/query", json=raw("SELECT 1"))) == [[1]]
        # the companion's one session (half of --pool-size 2) is the transaction's
        waited = client.post("/query", json=raw("SELECT 2"))
        refusal(waited, 503, "P6008")
        assert waited.headers["Retry-After"] == "1"
        assert client.post(f"/transaction/{tx}/commit").status_code == 200
        assert rows(client.post("/query", json=raw("SELECT 3"))) == [[3]]
