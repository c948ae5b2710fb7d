"""The README's first command, as a new user runs it: start, use, stop cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.accelerate import SUPPORTED_CLIENT
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_stack(
    state_dir: Path, port: int, gateway_port: int, runtime: str, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack",
                "--runtime",
                runtime,
                "--port",
                str(port),
                "--gateway-port",
                str(gateway_port),
                "--state-dir",
                str(state_dir),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for_ready(process: subprocess.Popen[bytes], log_path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "devstack: ready." in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"the stack exited during start-up:\n{text}")
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the stack did not become ready:\n{log_path.read_text(errors='replace')}")


def stop_stack(process: subprocess.Popen[bytes], state_dir: Path) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert not (state_dir / "postgres" / "postmaster.pid").exists()


@pytest.fixture
def dev_vars_restored() -> object:
    """The stack writes .dev.vars in the checkout; put back whatever was there."""
    path = ROOT / ".dev.vars"
    before = path.read_bytes() if path.exists() else None
    yield None
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def test_stack_serves_the_api_keeps_data_between_runs_and_stops_cleanly(
    tmp_path: Path, dev_vars_restored: object
) -> None:
    port, gateway_port = free_port(), free_port()
    log_path = tmp_path / "stack.log"
    process = start_stack(tmp_path / "state", port, gateway_port, "cpython", log_path)
    try:
        output = wait_for_ready(process, log_path, seconds=90)
        assert "running on CPython (NOT workerd/Pyodide)" in output
        assert f"http://127.0.0.1:{port}/" in output
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json()["database"]["reachable"] is True
        created = httpx.post(f"{base}/users", json={"email": "new@example.com", "name": "New"})
        assert created.status_code == 201
        assert [u["email"] for u in httpx.get(f"{base}/users").json()["items"]] == [
            "new@example.com"
        ]
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/readyz").status_code == 200
        # the terminal shows start-up and URLs; a line per request goes to the log files
        logs = tmp_path / "state" / "logs"
        assert f"{logs / 'gateway.log'}, {logs / 'worker.log'}" in output
        assert f"http://127.0.0.1:{port}/docs" in output
        assert '"event": "request"' in (logs / "gateway.log").read_text()
        assert "POST /users HTTP/1.1 201" in (logs / "worker.log").read_text()
        terminal = log_path.read_text()
        assert '"event": "request"' not in terminal and "POST /users" not in terminal
        assert "gateway: " in terminal  # its start-up lines, named
        # Prisma Accelerate's URL, as printed, opens the app's database through the gateway
        (accelerate_url,) = re.findall(r"prisma\+postgres://localhost:\d+/\?api_key=\S+", output)
        key = accelerate_url.rsplit("api_key=", 1)[1]
        info = httpx.get(
            f"http://127.0.0.1:{gateway_port}/connection-info",
            headers={"Authorization": f"Bearer {key}", "Prisma-Engine-Hash": SUPPORTED_CLIENT},
        )
        assert info.status_code == 200 and info.json()["provider"] == "postgres"
    finally:
        stop_stack(process, tmp_path / "state")
    # a second run finds the data of the first
    process = start_stack(tmp_path / "state", port, gateway_port, "cpython", log_path)
    try:
        wait_for_ready(process, log_path, seconds=90)
        users = httpx.get(f"http://127.0.0.1:{port}/users").json()["items"]
        assert [u["email"] for u in users] == ["new@example.com"]
    finally:
        stop_stack(process, tmp_path / "state")


def test_auto_mode_says_plainly_which_runtime_serves_the_worker(
    tmp_path: Path, dev_vars_restored: object
) -> None:
    port = free_port()
    log_path = tmp_path / "stack.log"
    process = start_stack(tmp_path / "state", port, free_port(), "auto", log_path)
    try:
        output = wait_for_ready(process, log_path, seconds=240)
        in_workerd = "the Worker is running in workerd (pywrangler dev)" in output
        in_pyodide = (
            "workerd's Python runtime could not start here" in output
            and "the Worker is running in Pyodide 314.0.6 under Node.js (NOT workerd)" in output
        )
        assert in_workerd != in_pyodide
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["name"] == "pooled-worker"
        # the whole Worker, through the gateway and its API key, from Pyodide
        created = httpx.post(
            f"http://127.0.0.1:{port}/users", json={"email": "p@y.do", "name": "P"}
        )
        assert created.status_code == 201, created.text
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["database"]["reachable"] is True
        # the request log row is ctx.waitUntil work, written after its response (a bound
        # for a slow machine, not a measure)
        deadline = time.monotonic() + 60
        while True:
            logs = httpx.get(f"http://127.0.0.1:{port}/logs?limit=200").json()["items"]
            if "POST /users 201" in [log["message"] for log in logs]:
                break
            assert time.monotonic() < deadline, logs
            time.sleep(0.1)
    finally:
        stop_stack(process, tmp_path / "state")
    if in_pyodide:  # within the hour, a second start does not try the download again
        process = start_stack(tmp_path / "state", port, free_port(), "auto", log_path)
        try:
            output = wait_for_ready(process, log_path, seconds=120).rsplit("devstack: stopped", 1)[
                -1
            ]
            assert "devstack: not trying workerd again before" in output
            assert "starting the Worker under `pywrangler dev`" not in output
        finally:
            stop_stack(process, tmp_path / "state")


def test_a_second_start_refuses_at_once_and_leaves_the_first_stack_serving(
    tmp_path: Path, dev_vars_restored: object
) -> None:
    port, gateway_port = free_port(), free_port()
    state = tmp_path / "state"
    first_log = tmp_path / "first.log"
    first = start_stack(state, port, gateway_port, "cpython", first_log)
    try:
        output = wait_for_ready(first, first_log, seconds=90)
        password = (state / "app-password").read_text().strip()
        api_key = (state / "api-key").read_text().strip()
        assert password not in output and "app-password" in output
        assert api_key not in output
        keyless = httpx.post(
            f"http://127.0.0.1:{gateway_port}/sql",
            json={"query": "SELECT 1"},
            headers={"Neon-Connection-String": f"postgresql://app:{password}@x/app"},
        )
        assert keyless.status_code == 401  # the local gateway runs with an API key too
        base = f"http://127.0.0.1:{port}"
        for second_state, second_port in ((state, free_port()), (tmp_path / "other", port)):
            second_log = tmp_path / "second.log"
            second = start_stack(second_state, second_port, free_port(), "cpython", second_log)
            assert second.wait(timeout=30) == 1
            said = second_log.read_text()
            assert "devstack: not starting:" in said
            assert "running in workerd" not in said and "ready" not in said
            health = httpx.get(f"{base}/health")
            assert health.status_code == 200 and health.json()["database"]["reachable"] is True
        # `./dev up` itself refuses before any set-up: uv and npm are never run
        stubs, ran = tmp_path / "stubs", tmp_path / "set-up-ran"
        stubs.mkdir()
        for tool in ("uv", "npm", "apt-get"):
            (stubs / tool).write_text(f"#!/bin/sh\necho {tool} >> {ran}\nexit 3\n")
            (stubs / tool).chmod(0o755)
        refused = subprocess.run(
            [str(ROOT / "dev"), "up", "--port", str(port), "--state-dir", str(tmp_path / "x")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"},
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"port {port} (the Worker) is in use" in refused.stderr
        assert not ran.exists(), ran.read_text()
    finally:
        stop_stack(first, state)
