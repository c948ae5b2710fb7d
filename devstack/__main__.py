"""`./dev up`: the whole local stack on loopback, until Ctrl-C.

1. an embedded PostgreSQL, its data kept between runs (default .local/postgres);
2. schema.sql applied over the DIRECT url, as a migration would be;
3. the gateway (poolgate) pooling connections to it, with Prisma Accelerate's face too
   (a key of its own, printed in its prisma+postgres:// URL);
4. `.dev.vars` written with the POOLED connection string for the Worker;
5. the Worker: under `pywrangler dev` when the Workers runtime can start, otherwise in
   Pyodide under Node.js (or on CPython: --runtime cpython). The output says which.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from devstack import node_toolchain
from devstack import postgres as embedded
from devstack.migrate import apply_schema
from devstack.stack_lock import StackBusy, add_stack_arguments, exclusive_stack, require_free_ports
from devstack.terminal import relay
from devstack.workerd_memo import WorkerdMemo

ROOT = Path(__file__).resolve().parent.parent
APP_USER = "app"
APP_DATABASE = "app"


def kept_secret(state: Path, name: str) -> str:
    """A secret made once and kept beside the data (git-ignored, readable by you only):
    the app role's password, the gateway's API key."""
    path = state / name
    if not path.exists():
        state.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def wait_until_answering(url: str, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            time.sleep(0.2)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_stop_signal(children: dict[str, subprocess.Popen[bytes]]) -> int:
    """Block until SIGINT/SIGTERM (0); a child that dies meanwhile ends the stack (1)."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        for name, child in children.items():
            if child.poll() is not None:
                print(f"devstack: {name} exited with status {child.returncode}", flush=True)
                return 1
    return 0


def why_it_failed(log: str) -> list[str]:
    """The lines of a failed start that say why: errors and their causes first."""
    lines = [line.strip()[:160] for line in log.splitlines() if line.strip()]
    telling = [
        line for line in lines if any(word in line.lower() for word in ("error", "fail", "cause"))
    ]
    return (telling or lines)[:4]


def start_worker(runtime: str, port: int, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The Worker process and a sentence saying what it is."""
    url = f"http://127.0.0.1:{port}/"
    log_path = state / "workerd.log"
    memo = WorkerdMemo(state / "workerd-unavailable.json")
    skipped = memo.recent_failure() if runtime == "auto" else None
    if skipped is not None:
        print(skipped, flush=True)
    elif runtime in ("auto", "workerd"):
        print("devstack: starting the Worker under `pywrangler dev` (workerd)...", flush=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "devstack.workerd_host", *("--port", str(port))],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait_until_answering(url, process, seconds=120):
            memo.forget()
            return process, "the Worker is running in workerd (pywrangler dev)"
        stop(process)
        reason = why_it_failed(log_path.read_text(errors="replace"))
        if node_toolchain.cached_bundle() is None:
            reason.append(node_toolchain.missing_bundle_reason())
        memo.failed(reason)
        if runtime == "workerd":
            raise SystemExit("devstack: workerd could not start:\n  " + "\n  ".join(reason))
        print(
            "devstack: workerd's Python runtime could not start here (pywrangler downloads a "
            "Python 3.14 build, then workerd its Pyodide runtime bundle, unless an earlier"
            " start left them in uv's cache and .local/pyodide-bundles):\n  " + "\n  ".join(reason),
            flush=True,
        )
    host = "devstack.worker_server" if runtime == "cpython" else "devstack.pyodide_host"
    process = subprocess.Popen(
        [sys.executable, "-m", host, "--dev-vars", ".dev.vars", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."]), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    relay(process, state / "logs" / "worker.log")
    if not wait_until_answering(url, process, seconds=120):
        raise SystemExit(f"devstack: the Worker's host ({host}) did not start")
    if runtime == "cpython":
        return process, (
            "the Worker's route table is running on CPython (NOT workerd/Pyodide): "
            "same handlers, aiohttp's client instead of the runtime's fetch"
        )
    return process, (
        "the Worker is running in Pyodide 314.0.6 under Node.js (NOT workerd): entry.py,"
        " the real workers SDK, pydantic-core built for Pyodide, the runtime's fetch API"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="./dev up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_stack_arguments(parser)
    parser.add_argument(
        "--runtime",
        choices=("auto", "workerd", "pyodide", "cpython"),
        default="auto",
        help="auto tries workerd first and falls back to Pyodide under Node.js",
    )
    options = parser.parse_args()
    state: Path = options.state_dir.resolve()
    try:
        with exclusive_stack(state):
            require_free_ports({"the Worker": options.port, "the gateway": options.gateway_port})
            return run_stack(options, state)
    except StackBusy as busy:
        print(f"devstack: not starting: {busy}", file=sys.stderr, flush=True)
        return 1


def masked(url: str, password: str) -> str:
    return url.replace(quote(password, safe=""), "…")


def run_stack(options: argparse.Namespace, state: Path) -> int:
    password = kept_secret(state, "app-password")
    api_key = kept_secret(state, "api-key")
    accelerate_key = kept_secret(state, "accelerate-key")
    print(f"devstack: starting PostgreSQL (data in {state / 'postgres'})", flush=True)
    database = embedded.start(state / "postgres", stop_at_exit=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        embedded.ensure_role_and_database(database, APP_USER, password, APP_DATABASE)
        apply_schema(database.direct_url(APP_USER, password, APP_DATABASE))
        print("devstack: schema.sql applied over the direct URL", flush=True)

        gateway_url = f"http://127.0.0.1:{options.gateway_port}"
        accelerate_keys = state / "accelerate-keys"
        accelerate_keys.write_text(
            "# written by ./dev up: Prisma Accelerate's key, and the role it opens\n"
            f"{accelerate_key} postgresql://{APP_USER}:{quote(password, safe='')}@/{APP_DATABASE}\n"
        )
        accelerate_keys.chmod(0o600)
        children["the gateway"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poolgate.cli",
                "serve",
                "--upstream",
                database.upstream_url,
                "--listen",
                f"127.0.0.1:{options.gateway_port}",
                "--api-keys-file",
                str(state / "api-key"),
                *("--accelerate-keys-file", str(accelerate_keys)),
                *("--accelerate-node", node_toolchain.node()),
                *("--accelerate-node-modules", str(ROOT / "node_modules")),
                *("--drain-seconds", "0"),  # no load balancer in front of a local stack
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        relay(children["the gateway"], state / "logs" / "gateway.log", prefix="gateway: ")
        if not wait_until_answering(f"{gateway_url}/readyz", children["the gateway"], 30):
            raise SystemExit("devstack: the gateway did not start")

        pooled = f"postgresql://{APP_USER}:{quote(password, safe='')}@localhost/{APP_DATABASE}"
        (ROOT / ".dev.vars").write_text(
            "# written by ./dev up: the POOLED connection string, the gateway's endpoint and\n"
            "# API key; LOCAL_DEVELOPMENT allows the endpoint's custom port (never deployed)\n"
            f"DATABASE_URL={pooled}\nDATABASE_HTTP_ENDPOINT={gateway_url}/sql\n"
            f"DATABASE_API_KEY={api_key}\nLOCAL_DEVELOPMENT=true\n"
        )

        worker, what = start_worker(options.runtime, options.port, state)
        children["the Worker"] = worker
        direct = masked(database.direct_url(APP_USER, password, APP_DATABASE), password)
        print(
            f"""
devstack: ready.
  {what}
  open      http://127.0.0.1:{options.port}/docs      (the API explorer; / lists every route)
  gateway   {gateway_url}/sql   metrics {gateway_url}/metrics
  neon ws   {gateway_url.replace("http", "ws", 1)}/v2?api_key=…   (Neon's Pool/Client, ORMs)
  prisma    prisma+postgres://localhost:{options.gateway_port}/?api_key={accelerate_key}
            (Prisma 7's accelerateUrl, with withAccelerate(): see examples/prisma-accelerate)
  logs      {state / "logs" / "gateway.log"}, {state / "logs" / "worker.log"} (a line per request)
  direct    {direct}   (migrations only)
  secrets   {state / "app-password"}, {state / "api-key"}, {state / "accelerate-keys"}
            (also in .dev.vars, git-ignored)
Ctrl-C stops everything.""",
            flush=True,
        )
        return wait_for_stop_signal(children)
    finally:
        for child in reversed(children.values()):
            stop(child)
        database.stop()
        print("devstack: stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
