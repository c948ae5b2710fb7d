"""A real load balancer for the replica tests: Debian's HAProxy on loopback, round-robin
over gateway replicas, health-checking each one's `/readyz`.

`haproxy_config` is the configuration the gateway README's deploy guide shows; there
with TLS both ways, checks every 2 s with fall 2, and the replicas' real addresses."""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.services import free_port, terminate

CHECK_INTERVAL_MS = 300  # a short interval keeps the tests short; the guide uses 2 s


def haproxy_config(listen: str, replicas: dict[str, str], admin_socket: Path) -> str:
    """`replicas`: name -> host:port."""
    servers = "\n".join(f"    server {name} {address}" for name, address in replicas.items())
    return f"""\
global
    maxconn 4096
    stats socket {admin_socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    # a slow answer to a check is not a failed one (by default it must come within inter)
    timeout check 2s
    # a replica that refuses the connection (it died): the request goes to another one
    retries 3
    option redispatch 1

frontend gateway
    bind {listen}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    # down at the first failed check (a draining replica answers 503), up after two
    default-server check inter {CHECK_INTERVAL_MS}ms fall 1 rise 2
{servers}
"""


@dataclass
class Balancer:
    url: str
    process: subprocess.Popen[bytes]
    admin_socket: Path
    log_path: Path  # HAProxy says there when and why it took a replica out or back

    def log_text(self) -> str:
        return self.log_path.read_text()

    def states(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it (UP, DOWN, ...)."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(str(self.admin_socket))
            conn.sendall(b"show stat\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        return {
            row["svname"]: row["status"].split()[0]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, replica: str, state: str, seconds: float = 30) -> None:
        """Until HAProxy sees `replica` in `state` (the bound only keeps a broken build from
        hanging)."""
        deadline = time.monotonic() + seconds
        while self.states().get(replica) != state:
            assert time.monotonic() < deadline, f"{replica} never {state}: {self.states()}"
            time.sleep(0.02)

    def stop(self) -> None:
        terminate(self.process)


def start_haproxy(directory: Path, replicas: dict[str, str]) -> Balancer:
    """HAProxy in the foreground, once it answers and sees every replica UP."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is required (./dev test installs Debian's)"
    port = free_port()
    admin_socket = directory / "haproxy.sock"
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(f"127.0.0.1:{port}", replicas, admin_socket))
    with (directory / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    balancer = Balancer(
        f"http://127.0.0.1:{port}", process, admin_socket, directory / "haproxy.log"
    )
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, (directory / "haproxy.log").read_text()
        try:
            httpx.get(f"{balancer.url}/healthz", timeout=1)
            if set(balancer.states().values()) == {"UP"}:
                return balancer
        except (httpx.TransportError, OSError):
            pass
        if time.monotonic() > deadline:
            balancer.stop()
            raise AssertionError(
                f"HAProxy did not start:\n{(directory / 'haproxy.log').read_text()}"
            )
        time.sleep(0.05)
