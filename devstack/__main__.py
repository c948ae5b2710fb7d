"""`./dev up`: the whole local stack on loopback, until Ctrl-C.

Brings up an embedded PostgreSQL (data kept under .local/), the gateway in front of it,
and prints what to point a client at.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from devstack import postgres as embedded

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
APP_USER = "app"
APP_DATABASE = "app"


def app_password() -> str:
    """The app role's password: made once, kept in .local/ (git-ignored)."""
    path = LOCAL / "app-password"
    if not path.exists():
        LOCAL.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text().strip()


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"devstack: {what} exited during start-up")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"devstack: {what} did not become healthy at {url}")


def wait_for_stop_signal(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Block until SIGINT/SIGTERM; a child that dies meanwhile stops the stack too."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        for name, child in children.items():
            if child.poll() is not None:
                raise SystemExit(f"devstack: {name} exited with status {child.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="./dev up", description=__doc__)
    parser.add_argument("--gateway-port", type=int, default=4444)
    options = parser.parse_args()

    password = app_password()
    print("devstack: starting PostgreSQL (data in .local/postgres)", flush=True)
    database = embedded.start(LOCAL / "postgres", stop_at_exit=True)
    embedded.ensure_role_and_database(database, APP_USER, password, APP_DATABASE)

    gateway_url = f"http://127.0.0.1:{options.gateway_port}"
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolgate.cli",
            "serve",
            "--upstream",
            database.upstream_url,
            "--listen",
            f"127.0.0.1:{options.gateway_port}",
        ],
    )
    try:
        wait_until_healthy(f"{gateway_url}/readyz", gateway, "the gateway")
        pooled = f"postgresql://{APP_USER}:{quote(password, safe='')}@localhost/{APP_DATABASE}"
        print(
            json.dumps(
                {
                    "gateway": f"{gateway_url}/sql",
                    "pooled_connection_string": pooled,
                    "direct_url": database.direct_url(APP_USER, password, APP_DATABASE),
                },
                indent=2,
            ),
            flush=True,
        )
        print("devstack: ready; Ctrl-C stops everything", flush=True)
        wait_for_stop_signal({"the gateway": gateway})
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)
        database.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
