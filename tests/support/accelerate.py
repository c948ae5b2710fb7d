"""A gateway serving Prisma Accelerate's face (--accelerate-keys-file), for the tests of
that face and of Prisma's client against it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from tests.support.services import APP_DATABASE, APP_PASSWORD, APP_USER, Gateway, GatewayFactory

SUPPORTED_CLIENT = "7.10.1"  # what `prisma generate` (the CLI in package.json) writes


@dataclass(frozen=True)
class AccelerateEndpoint:
    gateway: Gateway
    api_key: str

    @property
    def port(self) -> int:
        port = urlsplit(self.gateway.url).port
        assert port is not None
        return port

    @property
    def url(self) -> str:
        """The URL an app gives `new PrismaClient({ accelerateUrl })`."""
        return f"prisma+postgres://localhost:{self.port}/?api_key={self.api_key}"

    @property
    def base(self) -> str:
        return self.gateway.url

    def headers(self, version: str = SUPPORTED_CLIENT, key: str | None = None) -> dict[str, str]:
        """What Prisma's client sends with every call."""
        return {
            "Authorization": f"Bearer {key or self.api_key}",
            "Prisma-Engine-Hash": version,
            "Content-Type": "application/json",
        }


def keys_line(key: str, user: str = APP_USER, password: str = APP_PASSWORD) -> str:
    return f"{key} postgresql://{quote(user)}:{quote(password)}@/{APP_DATABASE}"


def start_accelerate(
    gateways: GatewayFactory,
    folder: Path,
    *options: str,
    extra_lines: tuple[str, ...] = (),
    ca_file: str | None = None,
) -> AccelerateEndpoint:
    """A gateway with one Accelerate key for the app role (and `extra_lines`), its
    companion run by the project's Node.js on the project's node_modules."""
    key = "acc_" + secrets.token_hex(16)
    keys_file = folder / f"accelerate-keys-{secrets.token_hex(4)}"
    keys_file.write_text("\n".join([keys_line(key), *extra_lines]) + "\n")
    keys_file.chmod(0o600)
    gateway = gateways(
        "--accelerate-keys-file",
        str(keys_file),
        "--accelerate-node",
        node_toolchain.node(),
        "--accelerate-node-modules",
        str(node_toolchain.ROOT / "node_modules"),
        *options,
        ca_file=ca_file,
    )
    return AccelerateEndpoint(gateway, key)


@contextmanager
def accelerate_endpoint(postgres: EmbeddedPostgres, log_dir: Path) -> Iterator[AccelerateEndpoint]:
    """poolgate with its Accelerate face, serving the app database for as long as the
    block runs, for Prisma's client. One worker: with --cache memory each worker has its
    own entries, and a client's connections may reach either, so a second read could
    miss where the tests expect a hit (test_accelerate_face.py runs two workers, on one
    kept connection)."""
    gateways = GatewayFactory(postgres, log_dir)
    try:
        yield start_accelerate(gateways, log_dir, "--workers", "1")
    finally:
        gateways.stop_all()
