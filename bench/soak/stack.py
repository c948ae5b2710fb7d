"""The stack the soak runs against, every process its own and on loopback: an embedded
PostgreSQL with the schema, redis-server, a gateway with two workers sharing the Redis
cache behind an API key, and the Worker on the Pyodide host (as `./dev up` serves it
when workerd cannot start). Started with the tests' helpers, so the soak exercises what
the tests exercise; `Stack.stop` stops everything it started, in reverse order.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.migrate import apply_schema
from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    Gateway,
    WorkerServer,
    make_app_url,
    start_gateway,
    start_postgres,
    start_redis,
    start_worker_server,
    terminate,
)

GATEWAY_WORKERS = 2


@dataclass(frozen=True)
class Seed:
    """Rows the load works on, inserted over the direct URL before it starts."""

    readers: tuple[int, ...]  # users read by id (uncached)
    movers: tuple[int, int]  # the two users whose drafts transfers move between them
    movable: tuple[int, ...]  # those drafts


@dataclass
class Stack:
    folder: Path
    postgres: EmbeddedPostgres
    redis_url: str
    redis: subprocess.Popen[bytes]
    gateway: Gateway
    worker: WorkerServer
    api_key: str
    pool_size: int
    seed: Seed

    @property
    def gateway_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def direct(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))


def seed_rows(postgres: EmbeddedPostgres) -> Seed:
    """20 users to read, 2 users with 4 drafts each to transfer
    (at most 5 drafts each: some transfers are refused 409), 10 published posts."""
    url = postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE)
    with psycopg.connect(url) as conn, conn.transaction():

        def users(prefix: str, count: int) -> tuple[int, ...]:
            rows = conn.execute(
                "INSERT INTO users (email, name)"
                " SELECT %s || n || '@soak.example', %s || n FROM generate_series(1, %s) n"
                " RETURNING id",
                [prefix, prefix, count],
            ).fetchall()
            return tuple(int(str(row[0])) for row in rows)

        readers, movers = users("reader", 20), users("mover", 2)
        movable = conn.execute(
            "INSERT INTO posts (author_id, title)"
            " SELECT (ARRAY[%s, %s]::bigint[])[1 + n %% 2], 'movable ' || n"
            " FROM generate_series(1, 8) n RETURNING id",
            list(movers),
        ).fetchall()
        conn.execute(
            "INSERT INTO posts (author_id, title, published, published_at)"
            " SELECT %s, 'published ' || n, true, now() FROM generate_series(1, 10) n",
            [readers[0]],
        )
    return Seed(readers, (movers[0], movers[1]), tuple(int(str(r[0])) for r in movable))


@contextlib.contextmanager
def running_stack(folder: Path, pool_size: int) -> Iterator[Stack]:
    """The whole stack, stopped when the block ends (also when starting it failed)."""
    folder.mkdir(parents=True, exist_ok=True)
    api_key = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as cleanup:
        postgres = start_postgres(folder / "postgres")
        cleanup.callback(postgres.stop)
        apply_schema(postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE))
        seed = seed_rows(postgres)
        redis_dir = folder / "redis"
        redis_dir.mkdir(exist_ok=True)
        redis_url, redis = start_redis(redis_dir)
        cleanup.callback(terminate, redis)
        gateway = start_gateway(
            postgres.upstream_url,
            folder,
            *("--workers", str(GATEWAY_WORKERS), "--pool-size", str(pool_size)),
            *("--cache", redis_url, "--api-keys", api_key),
        )
        cleanup.callback(gateway.stop)
        dev_vars = folder / ".dev.vars"
        dev_vars.write_text(
            f"DATABASE_URL={make_app_url()}\nDATABASE_HTTP_ENDPOINT={gateway.url}/sql\n"
            f"DATABASE_API_KEY={api_key}\nLOCAL_DEVELOPMENT=true\n"
        )
        dev_vars.chmod(0o600)
        worker = start_worker_server(dev_vars, folder / "worker.log", "pyodide")
        cleanup.callback(worker.stop)
        yield Stack(folder, postgres, redis_url, redis, gateway, worker, api_key, pool_size, seed)
