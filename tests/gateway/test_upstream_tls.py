"""TLS from the gateway to Postgres: `--upstream ...?sslmode=verify-full&sslrootcert=...`
against a Postgres (Debian's 15, started here) that runs with `ssl = on` and accepts
only TLS connections over TCP: `/sql`, the wire driver, and WebSocket sessions (whose
bytes are relayed through the TLS connection)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import trustme
from poolgate.config import parse_upstream
from poolgate.core import wire

from devstack import node_toolchain
from tests.support.pg_websocket import WebSocketPostgres, query_message
from tests.support.services import GatewayFactory, free_port
from tests.support.sql import post_sql

BIN = Path("/usr/lib/postgresql/15/bin")
ROLE, PASSWORD = "tls_app", "tls-app-password"


@dataclass
class TlsPostgres:
    port: int
    ca_file: Path
    other_ca_file: Path
    sockets: Path

    def wait_events(self, role: str) -> list[str]:
        """What the role's active backends wait on (pg_stat_activity), asked as postgres."""
        listed = as_postgres(
            str(BIN / "psql"),
            *("-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", "postgres"),
            "-At",
            *("-c", f"SELECT wait_event FROM pg_stat_activity WHERE usename = '{role}'"),
        )
        return listed.stdout.split()

    def upstream(self, ca_file: Path) -> str:
        return f"postgresql://localhost:{self.port}?sslmode=verify-full&sslrootcert={ca_file}"


def as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*runner, *command], capture_output=True, text=True, timeout=60, check=True
    )


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    assert (BIN / "postgres").exists(), "Debian's postgresql-15 (the test command installs it)"
    # not under pytest's temporary root, which may be private to root: the server runs
    # as the postgres user and must reach its files
    folder = Path(tempfile.mkdtemp(prefix="poolgate-tls-pg-"))
    folder.chmod(0o755)
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    certs = folder / "certs"
    certs.mkdir()
    issued.cert_chain_pems[0].write_to_path(str(certs / "server.crt"))
    issued.private_key_pem.write_to_path(str(certs / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(folder / "other-ca.pem"))
    data, sockets = folder / "data", folder / "sockets"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(certs, "postgres")
        for path in (certs / "server.crt", certs / "server.key", data, sockets):
            shutil.chown(path, "postgres")
    (certs / "server.key").chmod(0o600)
    as_postgres(str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust")
    (data / "pg_hba.conf").write_text(
        "local all postgres trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
        "host all all 0.0.0.0/0 reject\n"
        "host all all ::/0 reject\n"
    )
    port = free_port()
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    server = subprocess.Popen(
        [
            *runner,
            str(BIN / "postgres"),
            *("-D", str(data), "-p", str(port), "-k", str(sockets)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"),
            *("-c", f"ssl_cert_file={certs / 'server.crt'}"),
            *("-c", f"ssl_key_file={certs / 'server.key'}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(BIN / "pg_isready"), "-h", str(sockets), "-p", str(port)], capture_output=True
        ).returncode:
            assert server.poll() is None and time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)
        as_postgres(
            str(BIN / "psql"),
            *("-h", str(sockets), "-p", str(port), "-U", "postgres", "-d", "postgres"),
            *("-c", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"),
        )
        yield TlsPostgres(port, folder / "ca.pem", folder / "other-ca.pem", sockets)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


CONNECTION = f"postgresql://{ROLE}:{PASSWORD}@db.invalid/postgres"
SSL_IN_USE = {"query": "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}


def test_the_gateway_reaches_postgres_over_verified_tls(
    gateways: GatewayFactory, tls_postgres: TlsPostgres
) -> None:
    gateway = gateways(upstream=tls_postgres.upstream(tls_postgres.ca_file))
    reply = post_sql(gateway.url, CONNECTION, SSL_IN_USE)
    assert reply.status_code == 200, reply.text
    row = reply.json()["rows"][0]
    assert row["ssl"] is True and row["version"].startswith("TLSv1.")


def test_a_server_certificate_from_another_ca_is_refused(
    gateways: GatewayFactory, tls_postgres: TlsPostgres
) -> None:
    gateway = gateways(upstream=tls_postgres.upstream(tls_postgres.other_ca_file))
    reply = post_sql(gateway.url, CONNECTION, SSL_IN_USE)
    assert reply.status_code == 503
    log = gateway.log_once_it_has(reply.headers["Neon-Request-Id"])
    assert "password" not in reply.text and PASSWORD not in log


async def _wire_ssl_row(tls_postgres: TlsPostgres, ca_file: Path) -> list[str | None]:
    target = wire.Target.of(parse_upstream(tls_postgres.upstream(ca_file)))
    connection = await wire.connect(target, ROLE, "postgres", PASSWORD, {})
    try:
        rows: list[list[str | None]] = []
        await connection.run(SSL_IN_USE["query"], [], 10, lambda _, chunk: rows.extend(chunk))
        return rows[0]
    finally:
        connection.close()


async def test_the_wire_driver_prototype_logs_in_over_verified_tls(
    tls_postgres: TlsPostgres,
) -> None:
    ssl_in_use, version = await _wire_ssl_row(tls_postgres, tls_postgres.ca_file)
    assert ssl_in_use == "t" and (version or "").startswith("TLSv1.")


async def test_the_wire_driver_prototype_refuses_a_certificate_from_another_ca(
    tls_postgres: TlsPostgres,
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _wire_ssl_row(tls_postgres, tls_postgres.other_ca_file)


async def test_a_relay_over_tls_passes_the_servers_bytes_as_they_are(
    tls_postgres: TlsPostgres,
) -> None:
    target = wire.Target.of(parse_upstream(tls_postgres.upstream(tls_postgres.ca_file)))
    connection = await wire.connect(target, ROLE, "postgres", PASSWORD, {})
    try:
        stream = bytearray()
        arrived = asyncio.Event()

        def take(data: bytes) -> None:
            stream.extend(data)
            arrived.set()

        connection.start_relay(take, lambda _: arrived.set())
        query = b"SELECT repeat('x', 1000000)\0"
        connection.write(b"Q" + struct.pack("!i", len(query) + 4) + query)
        while not stream.endswith(b"Z\0\0\0\x05I"):
            assert not connection.broken
            arrived.clear()
            await arrived.wait()
        assert stream.count(b"x" * 1000) >= 1000
        connection.end_relay(idle=True)
        rows: list[list[str | None]] = []
        await connection.run(SSL_IN_USE["query"], [], 10, lambda _, chunk: rows.extend(chunk))
        assert rows[0][0] == "t"
    finally:
        connection.close()


def test_neons_pool_runs_websocket_sessions_through_a_tls_upstream(
    gateways: GatewayFactory, tls_postgres: TlsPostgres
) -> None:
    gateway = gateways(
        "--workers", "1", "--pool-size", "2", upstream=tls_postgres.upstream(tls_postgres.ca_file)
    )
    address = urlsplit(gateway.url)
    config = {"host": address.hostname, "port": address.port, "connectionString": CONNECTION}
    result = subprocess.run(
        [node_toolchain.node(), "pool_session.mjs", json.dumps(config)],
        cwd=Path(__file__).parent / "neon_client",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    output = json.loads(result.stdout)
    assert output["ssl"]["ssl"] is True and output["ssl"]["version"].startswith("TLSv1.")
    assert output["concurrent"] == [10, 20, 30, 40, 50]
    assert output["inTransaction"] == {"count": 5000, "total": 12502500}
    assert output["bigAnswer"] == 1000000
    assert output["failure"] == "22012" and output["afterFailure"] == [{"two": 2}]


async def test_a_session_client_that_does_not_read_stops_a_tls_upstream_not_the_gateways_memory(
    gateways: GatewayFactory, tls_postgres: TlsPostgres
) -> None:
    gateway = gateways("--workers", "1", upstream=tls_postgres.upstream(tls_postgres.ca_file))
    process = psutil.Process(gateway.process.pid)
    worker = (process.children() or [process])[0]  # one worker: no supervisor
    url = gateway.url.replace("http", "ws", 1) + "/v2"
    session = WebSocketPostgres(url, ROLE, PASSWORD, "postgres")
    try:
        assert (await session.connect()).status() == b"I"
        before = worker.memory_info().rss
        # about 100 MB of rows, and the client reads none of it for now
        await session.send(
            query_message("SELECT repeat('x', 1048576) FROM generate_series(1, 100)")
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # only so a broken build fails instead of hanging
        while "ClientWrite" not in tls_postgres.wait_events(ROLE):
            assert loop.time() < deadline, "Postgres never blocked writing to the gateway"
            await asyncio.sleep(0.1)
        grown = worker.memory_info().rss - before
        assert grown < 40 * 1024 * 1024, f"the gateway buffered {grown / 2**20:.0f} MiB"
        result = await session.read_reply()
        assert result.data_rows() == 100 and result.status() == b"I"
    finally:
        await session.close()
