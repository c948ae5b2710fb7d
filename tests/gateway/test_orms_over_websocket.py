"""Drizzle, Kysely and Prisma, unchanged, on Neon's driver in its WebSocket mode against
the gateway, each configured as a user would: transactions committed, rolled back by a
throw, a savepoint rolled back inside a committed transaction, an isolation level. What
each kept is read back through the client and checked over a direct admin connection."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from tests.support.prisma import generate_client, quiet_prisma
from tests.support.services import (
    Gateway,
    GatewayFactory,
    make_app_url,
    wait_until_not_running,
)

CLIENT_DIR = Path(__file__).parent / "orm_clients"
PRISMA_DIR = CLIENT_DIR / "prisma"

# Created with plain SQL: Prisma's migrate and db push need its schema engine.
TABLES = {
    "orm_drizzle_account": "id int PRIMARY KEY, owner text NOT NULL",
    "orm_kysely_order": "id int PRIMARY KEY, item text NOT NULL",
    "orm_prisma_note": "id serial PRIMARY KEY, body text NOT NULL",
}


@pytest.fixture(scope="module")
def orm_gateway(gateways: GatewayFactory) -> Gateway:
    # A session holds its pooled connection for its life; with one worker the whole
    # pool is that worker's.
    return gateways("--pool-size", "4", "--workers", "1")


def fresh_table(postgres: EmbeddedPostgres, table: str) -> None:
    with postgres.admin("appdb") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({TABLES[table]})")
        conn.execute(f"ALTER TABLE {table} OWNER TO app")


def stored_rows(postgres: EmbeddedPostgres, table: str, columns: str) -> list[tuple[object, ...]]:
    with postgres.admin("appdb") as conn:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()


def session_lines(gateway: Gateway) -> list[dict[str, Any]]:
    """The gateway's log line of each WebSocket session that has ended."""
    lines = (json.loads(line) for line in gateway.log_text().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == "session"]


def client_command(script: str, gateway: Gateway, **extra: Any) -> list[str]:
    address = urlsplit(gateway.url)
    config = {
        "host": address.hostname,
        "port": address.port,
        "connectionString": make_app_url(host="gw.example"),
        **extra,
    }
    return [node_toolchain.node(), script, json.dumps(config)]


def run_orm_client(script: str, gateway: Gateway, **extra: Any) -> dict[str, Any]:
    result = subprocess.run(
        client_command(script, gateway, **extra),
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=node_toolchain.environment({**os.environ, **quiet_prisma()}),
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    output: dict[str, Any] = json.loads(result.stdout)
    return output


@pytest.fixture(scope="module")
def drizzle_output(orm_gateway: Gateway, postgres: EmbeddedPostgres) -> dict[str, Any]:
    fresh_table(postgres, "orm_drizzle_account")
    return run_orm_client("drizzle.mjs", orm_gateway)


@pytest.fixture(scope="module")
def kysely_output(orm_gateway: Gateway, postgres: EmbeddedPostgres) -> dict[str, Any]:
    fresh_table(postgres, "orm_kysely_order")
    return run_orm_client("kysely.mjs", orm_gateway)


@pytest.fixture(scope="module")
def prisma_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prisma generate` run on a copy of prisma/ in a temporary folder: the generated
    client is never in the tree, and runs at the same time in one tree do not overwrite
    each other's. The folder links the project's node_modules, where the generated code
    finds @prisma/client's runtime (the same files the adapter loads).

    The `prisma-client` generator writes TypeScript: Node 24 runs it as it is, stripping
    the types (its code is type-stripping-clean: `import type`, no enums or namespaces;
    Node strips nothing under node_modules, hence a folder of our own), and
    `importFileExtension = "ts"` makes its relative imports name the files Node's ESM
    loader looks for, which adds no extension. No build step, nothing transpiled.
    `PRISMA_SCHEMA_ENGINE_BINARY=/bin/false`: generate would download the schema engine,
    which it does not need (no migrations here)."""
    folder = tmp_path_factory.mktemp("prisma")
    for name in ("schema.prisma", "prisma.config.ts"):
        shutil.copy(PRISMA_DIR / name, folder / name)
    generate_client(folder)
    client = folder / "generated" / "client.ts"
    assert client.is_file()
    return client


@pytest.fixture(scope="module")
def prisma_output(
    orm_gateway: Gateway, postgres: EmbeddedPostgres, prisma_client: Path
) -> dict[str, Any]:
    fresh_table(postgres, "orm_prisma_note")
    return run_orm_client("prisma.mjs", orm_gateway, client=str(prisma_client))


def test_drizzle_commits_a_transaction(
    drizzle_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert drizzle_output["afterCommit"] == [1, 2]
    rows = stored_rows(postgres, "orm_drizzle_account", "id, owner")
    assert rows[:2] == [(1, "ada"), (2, "brian")]


def test_drizzle_rolls_back_a_transaction_whose_body_throws(
    drizzle_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert drizzle_output["seenBeforeThrow"] == [1, 2, 3]
    assert drizzle_output["rolledBack"] == "undo the insert"
    assert drizzle_output["afterRollback"] == [1, 2]
    assert 3 not in [row[0] for row in stored_rows(postgres, "orm_drizzle_account", "id")]


def test_drizzle_rolls_back_a_nested_transaction_to_its_savepoint_and_commits_the_outer(
    drizzle_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert drizzle_output["seenInSavepoint"] == [1, 2, 4, 5]
    assert drizzle_output["innerRolledBack"] == "undo to the savepoint"
    assert drizzle_output["afterSavepoint"] == [1, 2, 4, 6]
    ids = [row[0] for row in stored_rows(postgres, "orm_drizzle_account", "id")]
    assert 4 in ids and 6 in ids and 5 not in ids


def test_drizzle_rolls_back_a_transaction_in_which_postgres_refused_a_statement(
    drizzle_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert drizzle_output["refusedCode"] == "23505"
    assert drizzle_output["refused"].startswith("Failed query: insert")
    assert drizzle_output["afterRefused"] == [1, 2, 4, 6]
    assert 7 not in [row[0] for row in stored_rows(postgres, "orm_drizzle_account", "id")]


def test_drizzle_queues_concurrent_queries_in_a_pool_no_larger_than_the_gateways(
    drizzle_output: dict[str, Any], orm_gateway: Gateway
) -> None:
    assert drizzle_output["concurrent"] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert drizzle_output["concurrentSessions"] <= 4
    sessions = session_lines(orm_gateway)
    assert sessions and all(line["outcome"] == "ok" for line in sessions), sessions


def test_kysely_commits_a_transaction(
    kysely_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert kysely_output["afterCommit"] == [1, 2]
    rows = stored_rows(postgres, "orm_kysely_order", "id, item")
    assert rows[:2] == [(1, "tea"), (2, "milk")]


def test_kysely_rolls_back_a_transaction_whose_body_throws(
    kysely_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert kysely_output["seenBeforeThrow"] == [1, 2, 3]
    assert kysely_output["rolledBack"] == "undo the insert"
    assert kysely_output["afterRollback"] == [1, 2]
    assert 3 not in [row[0] for row in stored_rows(postgres, "orm_kysely_order", "id")]


def test_kysely_runs_a_serializable_transaction(
    kysely_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert kysely_output["isolation"] == "serializable"
    assert kysely_output["afterSerializable"] == [1, 2, 4]
    assert (4, "lemon") in stored_rows(postgres, "orm_kysely_order", "id, item")


def test_kysely_rolls_back_to_a_savepoint_of_a_controlled_transaction_and_commits(
    kysely_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert kysely_output["seenInSavepoint"] == [1, 2, 4, 5, 6]
    assert kysely_output["afterSavepoint"] == [1, 2, 4, 5]
    assert stored_rows(postgres, "orm_kysely_order", "id") == [(1,), (2,), (4,), (5,)]


def test_prisma_creates_and_finds_a_row(prisma_output: dict[str, Any]) -> None:
    found = prisma_output["found"]
    assert found["body"] == "first"
    assert isinstance(found["id"], int)
    assert prisma_output["notFound"] is None


def test_prisma_commits_a_serializable_interactive_transaction(
    prisma_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert prisma_output["isolation"] == "serializable"
    assert prisma_output["afterCommit"] == ["first, edited", "committed"]
    rows = stored_rows(postgres, "orm_prisma_note", "body")
    assert rows[:2] == [("first, edited",), ("committed",)]


def test_prisma_rolls_back_an_interactive_transaction_that_throws(
    prisma_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert prisma_output["seenBeforeThrow"] == ["first, edited", "rolled back"]
    assert prisma_output["rolledBack"] == "undo the transaction"
    assert prisma_output["afterRollback"] == ["first, edited", "committed"]
    bodies = [row[0] for row in stored_rows(postgres, "orm_prisma_note", "body")]
    assert "rolled back" not in bodies and "committed" in bodies


def test_prisma_reports_a_unique_violation_as_p2002(prisma_output: dict[str, Any]) -> None:
    assert prisma_output["duplicate"] == {
        "code": "P2002",
        "name": "PrismaClientKnownRequestError",
    }


def test_prisma_keeps_a_batch_transaction_whole_or_not_at_all(
    prisma_output: dict[str, Any], postgres: EmbeddedPostgres
) -> None:
    assert prisma_output["batchRefused"]["code"] == "P2002"
    expected = ["first, edited", "committed", "batch one", "batch two"]
    assert prisma_output["afterBatches"] == expected
    assert [row[0] for row in stored_rows(postgres, "orm_prisma_note", "body")] == expected


def test_kysely_cancels_a_query_it_aborts_on_the_server(
    orm_gateway: Gateway, postgres: EmbeddedPostgres
) -> None:
    marker = f"kysely-abort-{secrets.token_hex(4)}"
    client = subprocess.Popen(
        client_command("kysely_abort.mjs", orm_gateway, marker=marker),
        cwd=CLIENT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=node_toolchain.environment(),
    )
    assert client.stdout is not None
    try:
        output = json.loads(client.stdout.readline() or "{}")
        still_running = wait_until_not_running(postgres, marker, seconds=30)  # of its 60 s
    finally:
        with postgres.admin("appdb") as conn:  # the aborted statement, if it still runs
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE strpos(query, %s) > 0 AND pid <> pg_backend_pid()",
                [marker],
            )
        try:
            _, stderr = client.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            _, stderr = client.communicate()
    assert output.get("aborted") == "the user went away", stderr[-3000:]
    assert still_running == 0, f"the aborted statement still runs on backend {output['serverPid']}"
