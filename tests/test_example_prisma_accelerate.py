"""examples/prisma-accelerate, the write-up's Hono + Prisma + withAccelerate() Worker, run
as its README says: the client generated (offline), the migration applied over the
direct URL by devstack.migrate, and `wrangler dev` (the project's pinned wrangler and its
real workerd; a JavaScript Worker needs no download) with DATABASE_URL set to the
Accelerate endpoint's URL. Each route is hit over HTTP; what it stored is read over a
direct admin connection."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from tests.support.accelerate import AccelerateEndpoint
from tests.support.node import node_eval
from tests.support.prisma import generate_client
from tests.support.services import APP_DATABASE, APP_PASSWORD, APP_USER, free_port, terminate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "prisma-accelerate"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with the project's node_modules linked and its client
    generated, as `npm install && npx prisma generate` leaves it."""
    folder = tmp_path_factory.mktemp("example") / "prisma-accelerate"
    ignored = shutil.ignore_patterns("node_modules", "generated", ".wrangler", ".dev.vars", ".env")
    shutil.copytree(EXAMPLE, folder, ignore=ignored)
    generate_client(folder)
    assert (folder / "src" / "generated" / "prisma" / "client.ts").is_file()
    return folder


@pytest.fixture(scope="module")
def migrated(example: Path, postgres: EmbeddedPostgres) -> None:
    """The example's migration, applied by the project's runner over the direct URL."""
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute('DROP TABLE IF EXISTS "Log"')
        conn.execute('DROP TYPE IF EXISTS "Level"')
    (migration,) = (example / "prisma" / "migrations").glob("*/migration.sql")
    url = postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE)
    result = subprocess.run(
        [sys.executable, "-m", "devstack.migrate", "--url", url, "--schema", str(migration)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def worker(
    example: Path,
    migrated: None,
    accelerate: AccelerateEndpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """`wrangler dev` on the example, DATABASE_URL given as a --var (as .dev.vars would)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("wrangler") / "wrangler-dev.log"
    wrangler = example / "node_modules" / "wrangler" / "bin" / "wrangler.js"
    command = [node_toolchain.node(), str(wrangler), "dev", "--ip", "127.0.0.1"]
    command += ["--port", str(port), "--show-interactive-dev-session=false"]
    command += ["--var", f"DATABASE_URL:{accelerate.url}"]
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=example,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=node_toolchain.environment(env),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, log_path)
        yield url
    finally:
        descendants = psutil.Process(process.pid).children(recursive=True)
        terminate(process)
        for child in descendants:  # workerd, should wrangler not have stopped it
            if child.is_running():
                child.terminate()


def wait_until_ready(process: subprocess.Popen[Any], log_path: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while "Ready on http" not in (log := ANSI.sub("", log_path.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"wrangler dev did not start:\n{log[-3000:]}")
        time.sleep(0.2)


def stored_logs(postgres: EmbeddedPostgres) -> list[tuple[Any, ...]]:
    with postgres.admin(APP_DATABASE) as conn:
        return conn.execute(
            'SELECT id, level::text, message, meta FROM "Log" ORDER BY id'
        ).fetchall()


def test_the_pinned_workerd_supports_the_examples_compatibility_date() -> None:
    wanted = str(tomllib.loads((EXAMPLE / "wrangler.toml").read_text())["compatibility_date"])
    assert wanted <= node_eval("console.log(require('workerd').compatibilityDate)")


def test_the_example_starts_under_workerd_offline(worker: str) -> None:
    answer = httpx.get(f"{worker}/nowhere", timeout=60)
    assert (answer.status_code, answer.json()) == (404, {"error": "not found"})


def test_the_front_page_logs_the_request_and_answers_the_row_as_json(
    worker: str, postgres: EmbeddedPostgres
) -> None:
    answer = httpx.get(f"{worker}/", headers={"x-seen-by": "the test"}, timeout=60)
    assert answer.status_code == 200, answer.text
    logged = answer.json()["logged"]
    assert logged["level"] == "Info"
    assert logged["message"] == f"GET {worker}/"
    assert logged["meta"]["headers"]["x-seen-by"] == "the test"
    row = next(row for row in stored_logs(postgres) if row[0] == logged["id"])
    assert row[1:3] == ("Info", f"GET {worker}/")
    assert row[3]["headers"]["x-seen-by"] == "the test"


def test_a_log_is_created_read_back_and_a_missing_one_is_404(
    worker: str, postgres: EmbeddedPostgres
) -> None:
    body = {
        "level": "Warn",
        "message": "disk 91% full",
        "meta": {"disk": "/dev/sda1", "used": 0.91},
    }
    created = httpx.post(f"{worker}/logs", json=body, timeout=60)
    assert created.status_code == 201, created.text
    log = created.json()
    assert (log["level"], log["message"], log["meta"]) == ("Warn", "disk 91% full", body["meta"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", log["createdAt"])
    assert httpx.get(f"{worker}/logs/{log['id']}", timeout=60).json() == log
    missing = httpx.get(f"{worker}/logs/999999", timeout=60)
    assert (missing.status_code, missing.json()) == (404, {"error": "no such log"})
    stored = next(row for row in stored_logs(postgres) if row[0] == log["id"])
    assert stored[1:] == ("Warn", "disk 91% full", body["meta"])


def test_a_log_that_is_not_one_is_refused_with_400_and_not_stored(
    worker: str, postgres: EmbeddedPostgres
) -> None:
    before = stored_logs(postgres)
    for body in ({"level": "Loud", "message": "x"}, {"level": "Info"}, "not json"):
        content = body if isinstance(body, str) else json.dumps(body)
        answer = httpx.post(f"{worker}/logs", content=content, timeout=60)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"].startswith("expected")
    assert stored_logs(postgres) == before


def test_the_list_is_newest_first_and_sees_a_log_just_written(worker: str) -> None:
    first = httpx.get(f"{worker}/logs", timeout=60).json()
    ids = [log["id"] for log in first["logs"]]
    assert ids == sorted(ids, reverse=True) and len(ids) <= 20
    created = httpx.post(f"{worker}/logs", json={"message": "just written"}, timeout=60).json()
    # the list is cached (ttl 60): poolgate drops the model's entries on a write
    after = httpx.get(f"{worker}/logs", timeout=60).json()
    assert after["logs"][0] == created


# --- poolgate's cache (the reference executor caches nothing and has no /invalidate) ---


def test_the_list_is_served_from_the_cache_until_it_is_invalidated(
    worker: str, postgres: EmbeddedPostgres
) -> None:
    httpx.post(f"{worker}/logs", json={"message": "drops the cached list"}, timeout=60)
    assert httpx.get(f"{worker}/logs", timeout=60).json()["cacheStatus"] == "miss"
    cached = httpx.get(f"{worker}/logs", timeout=60).json()
    assert cached["cacheStatus"] == "ttl"
    with postgres.admin(APP_DATABASE) as conn:  # behind the Worker's back
        conn.execute("""UPDATE "Log" SET message = 'changed directly'""")
    assert httpx.get(f"{worker}/logs", timeout=60).json() == cached
    invalidated = httpx.post(f"{worker}/logs/invalidate", timeout=60)
    assert (invalidated.status_code, invalidated.json()) == (200, {"invalidated": ["logs"]})
    fresh = httpx.get(f"{worker}/logs", timeout=60).json()
    assert fresh["cacheStatus"] == "miss"
    assert {log["message"] for log in fresh["logs"]} == {"changed directly"}
