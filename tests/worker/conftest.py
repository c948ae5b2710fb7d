"""The Worker's app on CPython, against the real gateway and real Postgres.

Requests go through `App.handle` exactly as the Workers adapter sends them; only the
transport differs (httpx instead of the runtime's fetch).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from app import App, Services
from db.client import Database
from db.config import DatabaseConfig
from db.transport import HttpxTransport
from devstack import node_toolchain
from devstack.postgres import EmbeddedPostgres
from routes.table import build_app
from tests.support.services import (
    APP_DATABASE,
    Gateway,
    WorkerServer,
    make_app_url,
    start_worker_server,
)
from web import MAX_BODY_BYTES, Request


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float = 0.0  # until the response, without the work deferred past it

    def json(self) -> Any:
        return json.loads(self.body)


def prepared(
    json_body: Any, body: bytes | None, headers: dict[str, str] | None
) -> tuple[bytes | None, dict[str, str]]:
    """The body and lower-cased headers a test request sends (JSON when `json_body`)."""
    sent = {k.lower(): v for k, v in (headers or {}).items()}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent.setdefault("content-type", "application/json")
    return body, sent


class WorkerClient:
    """Sends requests through the app; work the app defers runs before the reply returns."""

    def __init__(self, app: App, database: Database | None) -> None:
        self.app = app
        self.database = database

    async def request(
        self,
        method: str,
        target: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        body_too_large: bool = False,
    ) -> Reply:
        url = urlsplit(target)
        body, sent_headers = prepared(json_body, body, headers)
        deferred: list[Awaitable[Any]] = []
        services = Services(database=self.database, defer=deferred.append)
        request = Request(
            method=method,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            query_string=url.query,
            headers=sent_headers,
            body=body or b"",
            body_too_large=body_too_large,
        )
        started = time.monotonic()
        response = await self.app.handle(request, services)
        seconds = time.monotonic() - started
        await asyncio.gather(*deferred)
        return Reply(response.status, response.headers, response.body, seconds)

    async def get(self, target: str, **kwargs: Any) -> Reply:
        return await self.request("GET", target, **kwargs)

    async def post(self, target: str, json_body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", target, json_body=json_body, **kwargs)

    async def patch(self, target: str, json_body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("PATCH", target, json_body=json_body, **kwargs)

    async def delete(self, target: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", target, **kwargs)


_SENDABLE = re.compile(
    r"(?:[!-~\x80-\U0010ffff](?:[\t -~\x80-\U0010ffff]*[!-~\x80-\U0010ffff])?)?\Z"
)


class HostClient(WorkerClient):
    """The same requests, sent over HTTP to the Worker served by a host (Pyodide under
    Node.js): the Worker under test is the host's, `database` only helps tests set up."""

    def __init__(self, url: str, database: Database | None) -> None:
        super().__init__(build_app(), database)
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=30)

    async def request(
        self,
        method: str,
        target: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        body_too_large: bool = False,
    ) -> Reply:
        body, sent = prepared(json_body, body, headers)
        if body_too_large:
            body = b"x" * (MAX_BODY_BYTES + 1)
        started = time.monotonic()
        # any text as sent, unless HTTP/1.1 cannot carry it (control characters, white
        # space at either end): such a header never reaches a deployed Worker either
        raw_headers = [(k.encode(), v.encode()) for k, v in sent.items() if _SENDABLE.match(v)]
        reply = await self.http.request(method, target, content=body, headers=raw_headers)
        return Reply(
            reply.status_code,
            {k.lower(): v for k, v in reply.headers.items()},
            reply.content,
            time.monotonic() - started,
        )


def config_for(gateway_url: str, timeout: float = 5.0) -> DatabaseConfig:
    return DatabaseConfig.from_env(
        {
            "DATABASE_URL": make_app_url(),
            "DATABASE_HTTP_ENDPOINT": f"{gateway_url}/sql",
            "DATABASE_TIMEOUT_SECONDS": str(timeout),
            "LOCAL_DEVELOPMENT": "true",  # the test gateways listen on custom ports
        }
    )


@pytest.fixture(scope="session")
async def database(gateway: Gateway, schema: None) -> AsyncIterator[Database]:
    transport = HttpxTransport()
    yield Database(config_for(gateway.url), transport)
    await transport.aclose()


@pytest.fixture(scope="session")
def settled_pyodide_host(
    gateway: Gateway, schema: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerServer]:
    folder = tmp_path_factory.mktemp("pyodide-settled")
    server = start_worker_server(
        write_dev_vars(folder, gateway), folder / "worker.log", "pyodide", settle=True
    )
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["in-process", "pyodide"])
async def client(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[WorkerClient]:
    """The Worker under test: its app in this process (CPython), and the same Worker
    served from Pyodide under Node.js over HTTP. Every test that takes `client` runs
    against both."""
    if request.param == "in-process":
        yield WorkerClient(build_app(), database)
        return
    host: WorkerServer = request.getfixturevalue("settled_pyodide_host")
    client = HostClient(host.url, database)
    yield client
    await client.http.aclose()


def write_dev_vars(folder: Path, gateway: Gateway) -> Path:
    dev_vars = folder / ".dev.vars"
    dev_vars.write_text(
        f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={gateway.url}/sql\n"
        "LOCAL_DEVELOPMENT=true\n"
    )
    return dev_vars


# workerd joins where its Pyodide runtime bundle is cached (tests/test_toolchain.py says
# so in its skip reason when it is not)
HOSTS = ["cpython", "pyodide", *(["workerd"] if node_toolchain.cached_bundle() else [])]


@pytest.fixture(scope="session", params=HOSTS)
def worker_server(
    request: pytest.FixtureRequest,
    gateway: Gateway,
    schema: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerServer]:
    """The Worker over HTTP on each local host: Pyodide under Node.js (what `./dev up`
    runs when workerd cannot start), CPython (`--runtime cpython`) and, where it can
    start, workerd itself under `pywrangler dev`."""
    folder = tmp_path_factory.mktemp(f"worker-host-{request.param}")
    server = start_worker_server(
        write_dev_vars(folder, gateway), folder / "worker.log", request.param
    )
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def empty_tables(request: pytest.FixtureRequest) -> None:
    """Tests that use the database start from empty tables; others start no services."""
    users = {"client", "database", "worker_server", "settled_pyodide_host"}
    if not users & set(request.fixturenames):
        return
    request.getfixturevalue("schema")
    postgres: EmbeddedPostgres = request.getfixturevalue("postgres")
    with postgres.admin(APP_DATABASE) as conn:
        conn.execute("TRUNCATE users, posts, logs, idempotency_keys RESTART IDENTITY CASCADE")
    # TRUNCATE bypasses the Worker, so drop what an earlier test may have left cached
    gateway: Gateway = request.getfixturevalue("gateway")
    tags = ["published_posts", *(f"user_{n}_posts" for n in range(1, 32))]
    reply = httpx.post(
        f"{gateway.url}/invalidate",
        json={"tags": tags},
        headers={"Neon-Connection-String": make_app_url()},
    )
    assert reply.status_code == 200, reply.text
