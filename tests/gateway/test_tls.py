"""The gateway serving HTTPS (--tls-cert/--tls-key) with a throwaway CA: clients that
trust the CA verify the certificate and get through; clients that do not are refused."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from poolgate.config import ConfigError, parse_settings

from db.client import Database
from db.transport import HttpxTransport
from devstack import node_toolchain
from routes.table import build_app
from tests.support.certificates import Certificates
from tests.support.services import Gateway, GatewayFactory, make_app_url
from tests.worker.conftest import WorkerClient, config_for

CLIENT_DIR = Path(__file__).parent / "neon_client"
KEY = "tls-test-key-0123456789abcdef"


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_gateway(gateways: GatewayFactory, certificates: Certificates) -> Gateway:
    return gateways(
        *("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)),
        *("--api-keys", KEY),
        ca_file=str(certificates.ca_file),
    )


def test_a_client_trusting_the_ca_gets_through_over_tls_1_2_or_later(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    assert tls_gateway.url.startswith("https://")
    reply = httpx.post(
        f"{tls_gateway.url}/sql",
        json={"query": "SELECT 1 AS one"},
        headers={"Neon-Connection-String": make_app_url(), "Authorization": f"Bearer {KEY}"},
        verify=trusting(certificates.ca_file),
    )
    assert reply.status_code == 200 and reply.json()["rows"] == [{"one": 1}]
    old = trusting(certificates.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is: that is the point
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_gateway.url}/healthz", verify=old)


def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_gateway.url}/healthz", verify=trusting(certificates.other_ca_file))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(tls_gateway.url.replace("https://", "http://") + "/healthz")


async def test_the_workers_cpython_transport_verifies_the_gateway(
    tls_gateway: Gateway, certificates: Certificates, schema: None
) -> None:
    for ca_file, status in ((certificates.ca_file, 200), (certificates.other_ca_file, 503)):
        client = httpx.AsyncClient(verify=trusting(ca_file))
        transport = HttpxTransport(client)
        database = Database(replace(config_for(tls_gateway.url), api_key=KEY), transport)
        reply = await WorkerClient(build_app(), database).get("/users")
        await transport.aclose()
        assert reply.status == status, reply.body


def run_neon_driver(gateway: Gateway, ca_file: Path) -> dict[str, object]:
    node = node_toolchain.node()
    result = subprocess.run(
        [node, "keyed.mjs", gateway.url, make_app_url(), KEY],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(ca_file)},
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, object] = json.loads(result.stdout)
    return output


def test_neons_driver_verifies_the_gateway_and_sends_the_key_as_its_auth_token(
    tls_gateway: Gateway, certificates: Certificates
) -> None:
    assert run_neon_driver(tls_gateway, certificates.ca_file) == {"rows": [{"one": 1}]}
    refused = run_neon_driver(tls_gateway, certificates.other_ca_file)
    assert "rows" not in refused and "certificate" in str(refused["error"]).lower()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tls-cert", "cert.pem"], "go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot be used"),
    ],
)
def test_tls_settings_that_cannot_work_stop_start_up(options: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(["--upstream", "postgresql://h:5432", *options], environ={})


def test_a_key_that_does_not_match_the_certificate_stops_start_up(
    certificates: Certificates,
) -> None:
    with pytest.raises(ConfigError, match="cannot be used"):
        parse_settings(
            [
                *("--upstream", "postgresql://h:5432"),
                *("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.ca_file)),
            ],
            environ={},
        )
