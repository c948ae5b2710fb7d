"""Prisma's real client, unchanged, with `withAccelerate()` against an Accelerate endpoint
on loopback (`prisma+postgres://localhost:PORT/?api_key=KEY`, the URL a user pastes):
CRUD, nested writes, relation joins, createMany, upsert, P2002, raw SQL, both kinds of
transaction and a timed-out one, every typed value, the cache and its invalidation, a
wrong key and an unsupported client version. Each Node script in accelerate_client/
prints what the client saw; what was stored is read over a direct admin connection as
soon as the script ends (later scripts start from fresh tables)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    free_port,
    make_app_url,
    terminate,
)

CLIENT_DIR = Path(__file__).parent / "accelerate_client"
PRISMA_DIR = CLIENT_DIR / "prisma"
# The generated client's version, sent as Prisma-Engine-Hash (the CLI's, not
# @prisma/client's), and a later one that no endpoint can know the plans of.
GENERATED_VERSION = "7.10.1"
UNSUPPORTED_VERSION = "7.99.0"


@dataclass(frozen=True)
class AccelerateEndpoint:
    """`url` is what an app puts in `accelerateUrl`; `base` the same endpoint over http."""

    url: str
    base: str
    api_key: str


# --- the endpoint: Prisma's own query-plan executor until poolgate's face replaces it ---

QPE_DIR = Path(os.environ.get("POOLGATE_QPE_DIR", "/tmp/qpe"))
# @prisma/query-plan-executor exports a fetch handler, not a listener; it logs through
# OpenTelemetry's context, which its own (unexported) entry point sets up.
QPE_SERVER = """
import http from 'node:http';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
class Context {
  constructor(values = new Map()) { this.values = values; }
  getValue(key) { return this.values.get(key); }
  setValue(key, value) { return new Context(new Map(this.values).set(key, value)); }
  deleteValue(key) { const v = new Map(this.values); v.delete(key); return new Context(v); }
}
const storage = new AsyncLocalStorage();
const root = new Context();
globalThis[Symbol.for('opentelemetry.js.api.1')] = { version: '1.9.0', context: {
  active: () => storage.getStore() ?? root,
  with: (context, fn, self, ...args) => storage.run(context, () => fn.apply(self, args)),
  bind: (_context, target) => target, enable() { return this; }, disable() { return this; },
} };
const [dir, databaseUrl, port] = process.argv.slice(-3);
const qpe = createRequire(dir + '/')('@prisma/query-plan-executor');
const logger = qpe.createConsoleLogger('text', 'warn');
const server = await qpe.withActiveLogger(logger, () => qpe.Server.create({
  databaseUrl, maxResponseSize: 16 * 1024 * 1024,
  queryTimeout: qpe.parseDuration('PT30S'), maxTransactionTimeout: qpe.parseDuration('PT60S'),
  maxTransactionWaitTime: qpe.parseDuration('PT10S'),
}));
http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) headers.set(k, [v].flat().join(', '));
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks);
  const request = new Request(`http://localhost${req.url}`, { method: req.method, headers, body });
  const answer = await qpe.withActiveLogger(logger, () => server.fetch(request));
  res.writeHead(answer.status, Object.fromEntries(answer.headers));
  res.end(Buffer.from(await answer.arrayBuffer()));
}).listen(Number(port), '127.0.0.1');
"""


@contextmanager
def accelerate_endpoint(postgres: EmbeddedPostgres, log_dir: Path) -> Iterator[AccelerateEndpoint]:
    """An Accelerate endpoint serving the app database for as long as the block runs.

    For now Prisma's @prisma/query-plan-executor (installed outside the project, in
    POOLGATE_QPE_DIR): it speaks the protocol but checks no key or version and has no
    cache and no /invalidate. poolgate's Accelerate face replaces it here."""
    module = QPE_DIR / "node_modules" / "@prisma" / "query-plan-executor"
    assert module.is_dir(), f"@prisma/query-plan-executor is not installed in {QPE_DIR}"
    port = free_port()
    database_url = make_app_url(host="localhost") + f"?host={quote(postgres.socket_dir)}"
    log_path = log_dir / f"accelerate-{port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                node_toolchain.node(),
                "--input-type=module",
                "-",
                str(QPE_DIR),
                database_url,
                str(port),
            ],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=node_toolchain.environment(),
        )
    assert process.stdin is not None
    process.stdin.write(QPE_SERVER.encode())
    process.stdin.close()
    base = f"http://localhost:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, process, log_path
        )
        api_key = secrets.token_urlsafe(24)
        yield AccelerateEndpoint(
            f"prisma+postgres://localhost:{port}/?api_key={api_key}", base, api_key
        )
    finally:
        terminate(process)


def wait_for(
    ready: Callable[[], bool], process: subprocess.Popen[Any], log_path: Path, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the endpoint exited at start-up:\n{log_path.read_text()}")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the endpoint did not answer within {seconds} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def accelerate(
    postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccelerateEndpoint]:
    with accelerate_endpoint(postgres, tmp_path_factory.mktemp("accelerate-logs")) as endpoint:
        yield endpoint


# --- the client ---


def quiet_prisma() -> dict[str, str]:
    """No update check or telemetry from Prisma's CLI and client (the tests run offline)."""
    return {"CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1"}


def generate_client(folder: Path) -> None:
    """`prisma generate` in `folder` (a copy of a prisma/ folder), offline.

    The folder links the project's node_modules, where the generated code finds
    @prisma/client's runtime. `PRISMA_SCHEMA_ENGINE_BINARY=/bin/false`: generate would
    download the schema engine, which it does not need (no migrations here)."""
    (folder / "node_modules").symlink_to(node_toolchain.ROOT / "node_modules")
    cli = node_toolchain.ROOT / "node_modules" / "prisma" / "build" / "index.js"
    env = {**quiet_prisma(), "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false"}
    result = subprocess.run(
        [node_toolchain.node(), str(cli), "generate"],  # prisma.config.ts names the schema
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=node_toolchain.environment({**os.environ, **env}),
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]


@pytest.fixture(scope="module")
def prisma_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated client (runtime nodejs, TypeScript that Node 24 runs by stripping
    its types, as in test_orms_over_websocket.py), in a temporary folder of its own."""
    folder = tmp_path_factory.mktemp("prisma-accelerate")
    for name in ("schema.prisma", "prisma.config.ts"):
        shutil.copy(PRISMA_DIR / name, folder / name)
    generate_client(folder)
    client = folder / "generated" / "client.ts"
    assert client.is_file()
    return client


@pytest.fixture(scope="module")
def unsupported_client(prisma_client: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same generated client, claiming to be generated by a Prisma CLI the endpoint
    cannot support. The generated code's `clientVersion` is the only thing the client sends
    its version from (as Prisma-Engine-Hash, on every call); this copy is what
    `prisma generate` of a newer CLI would leave as far as the endpoint can tell. Its
    plans are still 7.10's, so an endpoint that ran them anyway would even answer right:
    the test asserts it refuses before running anything."""
    folder = tmp_path_factory.mktemp("prisma-unsupported")
    shutil.copytree(prisma_client.parent, folder / "generated")
    (folder / "node_modules").symlink_to(node_toolchain.ROOT / "node_modules")
    class_file = folder / "generated" / "internal" / "class.ts"
    text = class_file.read_text()
    old = f'"clientVersion": "{GENERATED_VERSION}"'
    assert text.count(old) == 1, f"{class_file} has no {old}"
    class_file.write_text(text.replace(old, f'"clientVersion": "{UNSUPPORTED_VERSION}"'))
    return folder / "generated" / "client.ts"


Pauses = dict[str, Callable[[], None]]


def run_script(script: str, url: str, client: Path, pauses: Pauses | None = None) -> dict[str, Any]:
    """Run accelerate_client/`script`; at each `{"pause": step}` line it prints, do
    `pauses[step]` and let it go on. Returns the JSON document it prints last."""
    config = json.dumps({"url": url, "client": str(client)})
    process = subprocess.Popen(
        [node_toolchain.node(), script, config],
        cwd=CLIENT_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=node_toolchain.environment({**os.environ, **quiet_prisma()}),
    )
    assert process.stdin is not None and process.stdout is not None
    last: dict[str, Any] = {}
    try:
        for line in process.stdout:
            message = json.loads(line)
            if "pause" not in message:
                last = message
                continue
            (pauses or {})[message["pause"]]()
            process.stdin.write("\n")
            process.stdin.flush()
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and last, stderr[-3000:]
    return last


def fresh_tables(postgres: EmbeddedPostgres) -> None:
    """prisma/tables.sql run as the app role over the direct URL, as a migration would."""
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("DROP TABLE IF EXISTS accel_post, accel_author, accel_sample")
        conn.execute("DROP TYPE IF EXISTS accel_role")
    with psycopg.connect(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE)) as conn:
        conn.execute((PRISMA_DIR / "tables.sql").read_text().encode())


def stored(postgres: EmbeddedPostgres, query: str) -> list[tuple[Any, ...]]:
    with postgres.admin(APP_DATABASE) as conn:
        return conn.execute(query.encode()).fetchall()


EMAILS = "SELECT email FROM accel_author ORDER BY id"


@pytest.fixture(scope="module")
def queries(
    accelerate: AccelerateEndpoint, postgres: EmbeddedPostgres, prisma_client: Path
) -> dict[str, Any]:
    fresh_tables(postgres)
    output = run_script("queries.mjs", accelerate.url, prisma_client)
    output["stored"] = {
        "emails": [row[0] for row in stored(postgres, EMAILS)],
        "posts": stored(
            postgres,
            "SELECT p.title, p.published, p.tags, a.email FROM accel_post p"
            ' JOIN accel_author a ON a.id = p."authorId" ORDER BY p.title',
        ),
        "names": dict(stored(postgres, "SELECT email, name FROM accel_author")),
    }
    return output


@pytest.fixture(scope="module")
def types(
    accelerate: AccelerateEndpoint, postgres: EmbeddedPostgres, prisma_client: Path
) -> dict[str, Any]:
    fresh_tables(postgres)
    output = run_script("types.mjs", accelerate.url, prisma_client)
    output["stored"] = stored(
        postgres,
        "SELECT label, big::text, amount::text, encode(payload, 'hex'), doc::text,"
        " to_char(at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS'), role::text"
        " FROM accel_sample ORDER BY label",
    )
    return output


def rename_behind_the_client(postgres: EmbeddedPostgres, *names: str) -> Callable[[], None]:
    def rename() -> None:
        with postgres.admin(APP_DATABASE) as conn:
            for name in names:
                conn.execute(
                    "UPDATE accel_author SET name = %s WHERE email = %s",
                    [f"{name}, changed", f"{name}@cache.example"],
                )

    return rename


@pytest.fixture(scope="module")
def cache(
    accelerate: AccelerateEndpoint, postgres: EmbeddedPostgres, prisma_client: Path
) -> dict[str, Any]:
    fresh_tables(postgres)
    pauses = {
        "rename tagged and other behind the client": rename_behind_the_client(
            postgres, "tagged", "other"
        ),
        "rename all behind the client": rename_behind_the_client(postgres, "all"),
    }
    return run_script("cache.mjs", accelerate.url, prisma_client, pauses)


# --- queries ---


def test_a_row_is_created_found_updated_and_deleted(queries: dict[str, Any]) -> None:
    assert queries["created"] == {
        "email": "ada@example.com",
        "role": "READER",
        "createdAtIsDate": True,
    }
    assert queries["found"] == {"id": 1, "name": "Ada"}
    assert queries["notFound"] is None
    assert queries["updated"] == {"name": "Ada Lovelace", "role": "EDITOR"}
    assert queries["deleted"] == "brief@example.com"
    assert queries["afterDelete"] == ["ada@example.com"]
    assert queries["stored"]["names"]["ada@example.com"] == "Ada Lovelace"
    assert "brief@example.com" not in queries["stored"]["emails"]


def test_a_nested_write_creates_and_updates_related_rows_read_back_through_include(
    queries: dict[str, Any],
) -> None:
    assert queries["nestedCreate"] == [
        {"title": "COBOL", "tags": ["lang", "history"]},
        {"title": "Nanoseconds", "tags": []},
    ]
    assert queries["included"] == [
        {"title": "COBOL", "published": True},
        {"title": "Debugging", "published": False},
        {"title": "Nanoseconds", "published": True},
    ]
    assert queries["postsWithAuthor"] == [
        ["COBOL", "grace@example.com"],
        ["Nanoseconds", "grace@example.com"],
    ]
    assert queries["relationFilter"] == [["grace@example.com", 3]]
    assert queries["stored"]["posts"] == [
        ("COBOL", True, ["lang", "history"], "grace@example.com"),
        ("Debugging", False, None, "grace@example.com"),
        ("Nanoseconds", True, [], "grace@example.com"),
    ]


def test_create_many_counts_the_rows_and_skips_duplicates_when_asked(
    queries: dict[str, Any],
) -> None:
    assert queries["createMany"] == {"count": 3}
    assert queries["createManySkip"] == {"count": 1}
    emails = queries["stored"]["emails"]
    assert [email for email in emails if email.startswith("m")] == [
        "m1@example.com",
        "m2@example.com",
        "m3@example.com",
        "m4@example.com",
    ]


def test_upsert_creates_then_updates(queries: dict[str, Any]) -> None:
    assert queries["upsertCreated"] == {"name": "first"}
    assert queries["upsertUpdated"] == {"name": "second"}
    assert queries["stored"]["names"]["up@example.com"] == "second"


def test_a_unique_violation_is_p2002_with_the_constraint_in_its_meta(
    queries: dict[str, Any],
) -> None:
    duplicate = queries["duplicate"]
    assert (duplicate["name"], duplicate["code"]) == ("PrismaClientKnownRequestError", "P2002")
    assert (
        "Unique constraint failed on the constraint: `accel_author_email_key`"
        in (duplicate["message"])
    )
    assert duplicate["meta"]["modelName"] == "Author"
    cause = duplicate["meta"]["driverAdapterError"]["cause"]
    assert cause["kind"] == "UniqueConstraintViolation"
    assert cause["originalCode"] == "23505"
    assert cause["constraint"] == {"index": "accel_author_email_key"}


def test_raw_queries_take_parameters_and_answer_typed_values(queries: dict[str, Any]) -> None:
    assert queries["queryRaw"] == [{"authors": "7", "echoed": "ünïcode", "answer": 42}]
    assert queries["queryRawTypes"] == ["bigint", "string", "number"]  # count(*) is a BigInt
    assert queries["executeRaw"] == 4
    names = queries["stored"]["names"]
    assert all(names[f"m{n}@example.com"] == "raw" for n in range(1, 5))


def test_a_batch_transaction_is_kept_whole_or_not_at_all(queries: dict[str, Any]) -> None:
    assert queries["batch"] == ["batch1@example.com", 8]
    refused = queries["batchRefused"]
    assert refused["code"] == "P2002"
    emails = queries["stored"]["emails"]
    assert "batch1@example.com" in emails and "batch2@example.com" not in emails


def test_an_interactive_transaction_runs_serializable_and_commits(
    queries: dict[str, Any],
) -> None:
    assert queries["interactive"] == {"isolation": "serializable", "inside": True}
    assert "tx@example.com" in queries["stored"]["emails"]


def test_an_interactive_transaction_whose_body_throws_is_rolled_back(
    queries: dict[str, Any],
) -> None:
    assert queries["thrown"]["message"] == "undo the transaction"
    assert "thrown@example.com" not in queries["stored"]["emails"]


def test_an_interactive_transaction_past_its_timeout_is_p2028_and_rolled_back(
    queries: dict[str, Any],
) -> None:
    timed_out = queries["timedOut"]
    assert (timed_out["name"], timed_out["code"]) == ("PrismaClientKnownRequestError", "P2028")
    # Prisma's executor says "A query cannot be executed on an expired transaction. The
    # timeout for this transaction was 1000 ms…", meta {timeout, timeTaken}: the wording
    # and meta are the executor's, the code is the contract.
    assert "transaction" in timed_out["message"].lower()
    emails = queries["stored"]["emails"]
    assert "late@example.com" not in emails and "later@example.com" not in emails
    assert queries["finalEmails"] == emails


# --- types ---

MAX_AMOUNT = "12345678901234567890.123456789012345678901234567891"
ALL_BYTES = bytes(range(256)).hex()
DOC = {
    "list": [1, -2.5, "x", None, True, {"deeper": {"empty": [], "nothing": {}}}],
    'ünï "quoted" \\ back': "çødé\n",
    "large": 9007199254740991,
}


def test_every_type_comes_back_as_the_value_and_the_type_that_was_written(
    types: dict[str, Any],
) -> None:
    expected = [
        {
            "label": "max",
            "big": {"type": "bigint", "value": "9223372036854775807"},
            "amount": {"isDecimal": True, "value": MAX_AMOUNT},
            "payload": {"isBytes": True, "value": ALL_BYTES},
            "doc": DOC,
            "at": {"isDate": True, "value": "2026-11-17T12:34:56.789Z"},
            "role": "ADMIN",
        },
        {
            "label": "min",
            "big": {"type": "bigint", "value": "-9223372036854775808"},
            "amount": {"isDecimal": True, "value": "-0.000000000000000000000000000001"},
            "payload": {"isBytes": True, "value": ""},
            "doc": [],
            "at": {"isDate": True, "value": "1970-01-01T00:00:00.001Z"},
            "role": "READER",
        },
    ]
    assert types["returned"] == expected  # what create answers
    assert types["read"] == expected  # what a later read answers
    assert types["docsEqual"] == [True, True]


def test_every_type_is_stored_exactly(types: dict[str, Any]) -> None:
    stored_rows = {row[0]: row[1:] for row in types["stored"]}
    big, amount, payload, doc, at, role = stored_rows["max"]
    assert (big, amount, payload, role) == ("9223372036854775807", MAX_AMOUNT, ALL_BYTES, "ADMIN")
    assert json.loads(doc) == DOC
    assert at == "2026-11-17T12:34:56.789"
    assert stored_rows["min"][:3] == (
        "-9223372036854775808",
        "-0.000000000000000000000000000001",
        "",
    )


def test_every_type_works_as_a_filter_parameter_and_in_an_aggregate(
    types: dict[str, Any],
) -> None:
    assert types["foundBy"] == {
        "big": "max",
        "amount": "min",
        "at": "max",
        "payload": "max",
        "role": "min",
        "doc": "max",
    }
    assert types["aggregate"] == {"_sum": {"big": "-1"}, "_max": {"amount": MAX_AMOUNT}}


# --- the cache (poolgate's: the reference executor caches nothing) ---


def statuses(reads: list[dict[str, Any]]) -> list[str | None]:
    return [read["cacheStatus"] for read in reads]


def test_a_read_with_a_ttl_misses_then_is_served_from_the_cache(cache: dict[str, Any]) -> None:
    assert statuses(cache["ttl"]) == ["miss", "ttl"]
    assert [read["name"] for read in cache["ttl"]] == ["ttl", "ttl"]
    assert all(read["lastModifiedIsADate"] for read in cache["ttl"])


def test_a_read_with_swr_is_served_stale_while_it_is_revalidated(cache: dict[str, Any]) -> None:
    assert statuses(cache["swr"]) == ["miss", "swr"]
    assert statuses(cache["staleAfterTtl"]) == ["miss", "swr"]


def test_a_read_without_a_cache_strategy_is_never_cached(cache: dict[str, Any]) -> None:
    assert cache["uncached"]["cacheStatus"] == "none"


def test_a_write_through_the_client_is_seen_by_the_next_cached_read_without_invalidate(
    cache: dict[str, Any],
) -> None:
    assert [read["name"] for read in cache["writeThenRead"]] == ["write", "written"]
    assert statuses(cache["writeThenRead"]) == ["miss", "miss"]
    assert cache["nestedWriteThenRead"] == [
        {"count": 0, "cacheStatus": "miss"},
        {"count": 2, "cacheStatus": "miss"},
    ]
    names = [read["name"] for read in cache["transactionThenRead"]]
    assert names == ["batch", "in a batch", "interactive"]
    assert statuses(cache["transactionThenRead"]) == ["miss", "miss", "miss"]


def test_invalidating_a_tag_drops_its_entries_and_keeps_the_others(
    cache: dict[str, Any],
) -> None:
    assert cache["invalidate"] == {"ok": {"requestId": "unspecified"}}
    tagged, other, tagged_cached, tagged_after, other_after = cache["tagged"]
    assert (tagged["name"], other["name"]) == ("tagged", "other")
    assert (tagged_cached["name"], tagged_cached["cacheStatus"]) == ("tagged", "ttl")
    assert (tagged_after["name"], tagged_after["cacheStatus"]) == ("tagged, changed", "miss")
    assert (other_after["name"], other_after["cacheStatus"]) == ("other", "ttl")


def test_invalidate_all_drops_every_entry(cache: dict[str, Any]) -> None:
    assert cache["invalidateAll"] == {"ok": {"requestId": "unspecified"}}
    first, cached, after, other_after = cache["all"]
    assert (first["name"], first["cacheStatus"]) == ("all", "miss")
    assert (cached["name"], cached["cacheStatus"]) == ("all", "ttl")
    assert (after["name"], after["cacheStatus"]) == ("all, changed", "miss")
    assert (other_after["name"], other_after["cacheStatus"]) == ("other, changed", "miss")


# --- clients turned away ---


def test_a_wrong_api_key_is_refused_with_the_clients_error_and_runs_nothing(
    accelerate: AccelerateEndpoint, postgres: EmbeddedPostgres, prisma_client: Path
) -> None:
    fresh_tables(postgres)
    wrong = accelerate.url.replace(accelerate.api_key, "not-" + accelerate.api_key)
    output = run_script("refused.mjs", wrong, prisma_client)
    for step in ("create", "findMany"):
        error = output[step].get("error")
        assert error is not None, output
        # P6002 is hosted Accelerate's "The API Key in the connection string is invalid."
        assert (error["name"], error["code"]) == ("PrismaClientKnownRequestError", "P6002")
        assert "api key" in error["message"].lower()
    assert stored(postgres, EMAILS) == []


def test_an_unsupported_client_version_is_refused_naming_the_supported_versions(
    accelerate: AccelerateEndpoint, postgres: EmbeddedPostgres, unsupported_client: Path
) -> None:
    fresh_tables(postgres)
    output = run_script("refused.mjs", accelerate.url, unsupported_client)
    for step in ("create", "findMany"):
        error = output[step].get("error")
        assert error is not None, output
        # P6006 is hosted Accelerate's "The chosen Prisma version is not compatible"
        assert (error["name"], error["code"]) == ("PrismaClientKnownRequestError", "P6006")
        assert UNSUPPORTED_VERSION in error["message"]
        assert GENERATED_VERSION in error["message"]  # among the versions it names
    assert stored(postgres, EMAILS) == []


def connection_info(accelerate: AccelerateEndpoint, key: str, version: str) -> httpx.Response:
    """GET /connection-info as the client sends it (its first call, made before any query)."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Prisma-Engine-Hash": version,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    return httpx.get(f"{accelerate.base}/connection-info", headers=headers, timeout=30)


def error_code(answer: httpx.Response) -> str | None:
    """The code the client raises: a JSON body's `code`, else Prisma-Error-Code."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return str(body["code"])
    header: str | None = answer.headers.get("Prisma-Error-Code")
    return header


def test_connection_info_answers_the_generated_clients_version_with_relation_joins(
    accelerate: AccelerateEndpoint,
) -> None:
    answer = connection_info(accelerate, accelerate.api_key, GENERATED_VERSION)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["provider"], body["connectionInfo"]) == (
        "postgres",
        {"supportsRelationJoins": True},
    )


def test_connection_info_refuses_a_wrong_key_and_another_version_in_the_shape_the_client_reads(
    accelerate: AccelerateEndpoint,
) -> None:
    wrong_key = connection_info(accelerate, "not-" + accelerate.api_key, GENERATED_VERSION)
    assert wrong_key.status_code >= 400 and error_code(wrong_key) == "P6002", wrong_key.text
    for version in (UNSUPPORTED_VERSION, "6.19.0", ""):
        other = connection_info(accelerate, accelerate.api_key, version)
        assert other.status_code >= 400 and error_code(other) == "P6006", (version, other.text)
