"""Session-wide real services: one PostgreSQL, one default gateway, a gateway factory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.migrate import apply_schema
from devstack.postgres import EmbeddedPostgres
from tests.support.accelerate import AccelerateEndpoint, accelerate_endpoint
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    Gateway,
    GatewayFactory,
    make_app_url,
    start_postgres,
    start_redis,
)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = start_postgres(tmp_path_factory.mktemp("pg"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateways(
    postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(postgres, tmp_path_factory.mktemp("gateway-logs"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def gateway(gateways: GatewayFactory) -> Gateway:
    """The default gateway: default limits, pool size 10."""
    return gateways()


@pytest.fixture(scope="session")
def schema(postgres: EmbeddedPostgres) -> None:
    """schema.sql applied over the direct URL, as the migrate command does."""
    apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))


@pytest.fixture(scope="session")
def app_url() -> str:
    return make_app_url()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server for the shared-cache tests (each uses its own key prefix)."""
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def accelerate(
    postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccelerateEndpoint]:
    """poolgate's Accelerate face for Prisma's client (one per module that asks)."""
    with accelerate_endpoint(postgres, tmp_path_factory.mktemp("accelerate-logs")) as endpoint:
        yield endpoint
