"""A real browser on the Worker's pages: headless Chromium (Debian's, driven by
playwright-core) opens the API explorer at /docs on each local host, finds every route
of /openapi.json on the rendered page, sends GET /health through it and reads the
answer, then opens / as a browser. The explorer's screenshot is kept in
`.local/screenshots/` (the README describes what it shows)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from devstack import node_toolchain
from tests.support.services import WorkerServer

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_explorer_lists_every_route_and_sends_a_request(
    worker_server: WorkerServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: ./dev test installs Debian's chromium package")
    screenshot = tmp_path / "explorer.png"
    script = ROOT / "tests" / "browser" / "explorer.mjs"
    run = subprocess.run(
        [node_toolchain.node(), str(script), worker_server.url, str(screenshot)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    documented = httpx.get(f"{worker_server.url}/openapi.json").json()["paths"]
    expected = {
        (method.upper(), path) for path, operations in documented.items() for method in operations
    }
    assert {(op["method"], op["path"]) for op in seen["operations"]} == expected
    assert seen["docsUrl"] == f"{worker_server.url}/docs/"
    assert seen["requests"] == [worker_server.url.removeprefix("http://")]  # no CDN
    assert seen["healthStatus"] == "200"
    assert json.loads(seen["healthBody"])["database"]["reachable"] is True
    assert seen["indexType"] == "text/html; charset=utf-8"
    assert {"/docs", "/openapi.json"} <= set(seen["indexLinks"])
    assert seen["favicon"] == "image/x-icon"
    assert screenshot.stat().st_size > 20_000
    kept = ROOT / ".local" / "screenshots"
    kept.mkdir(parents=True, exist_ok=True)
    host = request.node.callspec.params["worker_server"]
    shutil.copy(screenshot, kept / f"explorer-{host}-host.png")


@pytest.mark.parametrize("path", ["/docs", "/docs/", "/docs/explorer.js", "/favicon.ico"])
def test_assets_are_served_before_the_worker_and_only_for_get_and_head(
    worker_server: WorkerServer, path: str
) -> None:
    got = httpx.get(f"{worker_server.url}{path}")
    assert got.status_code in (200, 307)
    if got.status_code == 307:
        assert got.headers["location"] == "/docs/"
    posted = httpx.post(f"{worker_server.url}{path}")
    assert posted.status_code in (404, 405, 308)  # the Worker's answer, as JSON
    assert posted.headers["content-type"] == "application/json; charset=utf-8"


def test_paths_outside_the_assets_directory_are_never_served(worker_server: WorkerServer) -> None:
    for path in ("/docs/../schema.sql", "/docs/%2e%2e/%2e%2e/schema.sql", "/..%2fschema.sql"):
        reply = httpx.get(f"{worker_server.url}{path}")
        assert reply.headers["content-type"] == "application/json; charset=utf-8", path
        assert b"CREATE TABLE" not in reply.content
