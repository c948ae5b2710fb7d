"""Real services for the tests: an embedded PostgreSQL and gateway processes on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import psutil

from devstack import postgres as devstack_postgres
from devstack.postgres import EmbeddedPostgres

APP_USER = "app"
APP_PASSWORD = "app-secret-пароль"
APP_DATABASE = "appdb"


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    postgres = devstack_postgres.start(data_dir, stop_at_exit=True)
    devstack_postgres.ensure_role_and_database(postgres, APP_USER, APP_PASSWORD, APP_DATABASE)
    return postgres


def make_app_url(
    password: str = APP_PASSWORD,
    database: str = APP_DATABASE,
    user: str = APP_USER,
    host: str = "db.invalid",
) -> str:
    """A Neon-Connection-String for the app role. The host is deliberately unroutable:
    the gateway must never dial it."""
    return f"postgresql://{quote(user)}:{quote(password)}@{host}/{quote(database)}"


def server_connections(postgres: EmbeddedPostgres, user: str) -> int:
    with postgres.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [user]
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def wait_until_not_running(postgres: EmbeddedPostgres, marker: str, seconds: float) -> int:
    """Statements containing `marker` still running on the server once they stopped or
    `seconds` passed (0 when all stopped in time)."""
    deadline = time.monotonic() + seconds
    while True:
        with postgres.admin("appdb") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND strpos(query, %s) > 0 AND pid <> pg_backend_pid()",
                [marker],
            ).fetchone()
        running = int(str(row[0])) if row is not None else 0
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send bytes exactly as given (no client fixes them); all the server answers."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConnectionSampler:
    """Counts a role's server connections in a thread while the block runs; `highest` is
    the most seen."""

    def __init__(self, postgres: EmbeddedPostgres, user: str) -> None:
        self.postgres, self.user = postgres, user
        self.highest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with self.postgres.admin("appdb") as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [self.user]
                ).fetchone()
                self.highest = max(self.highest, int(str(row[0])))  # type: ignore[index]
                time.sleep(0.002)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Gateway:
    """A `poolgate serve` process on loopback; its log lines are kept in `log_path`."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_path.read_text()

    def log_once_it_has(self, text: str, seconds: float = 5.0) -> str:
        """The log once `text` is in it (request lines are written just after the answer,
        a loop turn's lines together)."""
        deadline = time.monotonic() + seconds
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never reached the log:\n{log[-2000:]}")
            time.sleep(0.01)
        return log

    def stop(self) -> None:
        terminate(self.process)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_gateway(
    upstream: str,
    log_dir: Path,
    *options: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ca_file: str | None = None,
) -> Gateway:
    """`ca_file`: the gateway serves HTTPS (--tls-cert/--tls-key), trusted through it."""
    port = port or free_port()
    log_path = log_dir / f"gateway-{port}.log"
    args = [
        sys.executable,
        "-m",
        "poolgate.cli",
        "serve",
        "--upstream",
        upstream,
        "--listen",
        f"127.0.0.1:{port}",
        *options,
    ]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # no load balancer to drain for: a test's SIGTERM stops at once, unless it
            # passes --drain-seconds itself
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "POOLGATE_DRAIN_SECONDS": "0",
                **(env or {}),
            },
        )
    scheme = "https" if ca_file else "http"
    gateway = Gateway(f"{scheme}://127.0.0.1:{port}", process, log_path, args)
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    wait_until_answering(process, f"{gateway.url}/healthz", log_path, 20, verify)
    wait_for_every_worker(gateway)
    return gateway


def wait_for_every_worker(gateway: Gateway, seconds: float = 20) -> None:
    """With --workers, /healthz answers once one worker listens: wait until every
    worker the supervisor started says it listens (each logs it once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workers = len(psutil.Process(gateway.process.pid).children())
        if gateway.log_text().count('"event": "listening"') >= workers:
            return
        time.sleep(0.02)
    raise RuntimeError(f"not every worker started:\n{gateway.log_text()}")


def wait_until_answering(
    process: subprocess.Popen[bytes],
    url: str,
    log_path: Path,
    seconds: float,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Until `url` answers 200; the process is stopped if it never does, or if waiting
    fails in any way (so a failed start never leaves a server behind)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the server exited at start-up:\n{log_path.read_text()}")
            try:
                if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"{url} did not answer within {seconds} s:\n{log_path.read_text()}")
    except BaseException:
        terminate(process)
        raise


class GatewayFactory:
    """Starts gateways with given options; all are stopped at the end of the session."""

    def __init__(self, postgres: EmbeddedPostgres, log_dir: Path) -> None:
        self.postgres = postgres
        self.log_dir = log_dir
        self.started: list[Gateway] = []

    def __call__(
        self,
        *options: str,
        upstream: str | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ca_file: str | None = None,
    ) -> Gateway:
        gateway = start_gateway(
            upstream or self.postgres.upstream_url,
            self.log_dir,
            *options,
            port=port,
            env=env,
            ca_file=ca_file,
        )
        self.started.append(gateway)
        return gateway

    def stop_all(self) -> None:
        for gateway in self.started:
            gateway.stop()


@dataclass
class WorkerServer:
    """The Worker's route table on the CPython host (`devstack.worker_server`)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        terminate(self.process)


WORKER_HOSTS = {
    "cpython": "devstack.worker_server",
    "pyodide": "devstack.pyodide_host",
    "workerd": "devstack.workerd_host",  # only where its Pyodide bundle is cached
}


def start_worker_server(
    dev_vars: Path, log_path: Path, host: str = "cpython", settle: bool = False
) -> WorkerServer:
    """The Worker over HTTP: its CPython host, or Pyodide under Node.js (`host`);
    `settle`: the Pyodide host finishes deferred work before it answers (tests)."""
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    extra = ["--config", str(log_path.with_suffix(".json"))] if host == "pyodide" else []
    extra += ["--settle"] if settle else []
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                WORKER_HOSTS[host],
                "--dev-vars",
                str(dev_vars),
                "--port",
                str(port),
                *extra,
            ],
            cwd=root,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."])},
        )
    server = WorkerServer(f"http://127.0.0.1:{port}", process, log_path)
    # Pyodide's first start downloads the Worker's wheels; pywrangler vendors them first
    wait_until_answering(process, f"{server.url}/", log_path, 300 if host == "workerd" else 120)
    return server


def start_redis(directory: Path, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    assert server, "redis-server is required (the README's test command installs it)"
    port = port or free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        ).stdout.strip()
        != "PONG"
    ):
        assert time.monotonic() < deadline and process.poll() is None, "redis did not start"
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", process


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`poolgate serve ARGS` run to its end (a refusal, say), without POOLGATE_* settings
    from the test's own environment."""
    return subprocess.run(
        [sys.executable, "-m", "poolgate.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("POOLGATE_")},
            **(env or {}),
        },
    )
