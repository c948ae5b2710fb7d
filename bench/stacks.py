"""Minimal `POST /sql` endpoints on other stacks, to compare the gateway's parts against.

Each answers `{"query", "params"}` with the rows as JSON from a pool of 10 connections,
and nothing else: no protocol fidelity, no limits. They bound what each stack costs.
Run: python bench/stacks.py STACK PORT DSN
"""

from __future__ import annotations

import json
import sys
from typing import Any


def aiohttp_asyncpg(port: int, dsn: str) -> None:
    import asyncpg
    import uvloop
    from aiohttp import web

    async def start(app: web.Application) -> Any:
        app["pool"] = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        yield
        await app["pool"].close()

    async def sql(request: web.Request) -> web.Response:
        body = await request.json()
        async with request.app["pool"].acquire() as conn:
            rows = await conn.fetch(body["query"], *[int(p) for p in body["params"]])
        return web.Response(
            body=json.dumps([list(r) for r in rows], default=str), content_type="application/json"
        )

    app = web.Application()
    app.cleanup_ctx.append(start)
    app.router.add_post("/sql", sql)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


def _psycopg_pool(dsn: str) -> Any:
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        dsn, min_size=10, max_size=10, open=False, kwargs={"autocommit": True}
    )


def aiohttp_psycopg(port: int, dsn: str) -> None:
    import uvloop
    from aiohttp import web

    async def start(app: web.Application) -> Any:
        app["pool"] = _psycopg_pool(dsn)
        await app["pool"].open(wait=True)
        yield
        await app["pool"].close()

    async def sql(request: web.Request) -> web.Response:
        body = await request.json()
        async with request.app["pool"].connection() as conn:
            cursor = await conn.execute(body["query"].replace("$1", "%s"), body["params"])
            rows = await cursor.fetchall()
        return web.Response(body=json.dumps(rows, default=str), content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(start)
    app.router.add_post("/sql", sql)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


def starlette_psycopg(port: int, dsn: str) -> None:
    import contextlib

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    pool = _psycopg_pool(dsn)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await pool.open(wait=True)
        yield
        await pool.close()

    async def sql(request: Request) -> Response:
        body = await request.json()
        async with pool.connection() as conn:
            cursor = await conn.execute(body["query"].replace("$1", "%s"), body["params"])
            rows = await cursor.fetchall()
        return Response(json.dumps(rows, default=str), media_type="application/json")

    app = Starlette(routes=[Route("/sql", sql, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


STACKS = {f.__name__: f for f in (aiohttp_asyncpg, aiohttp_psycopg, starlette_psycopg)}

if __name__ == "__main__":
    STACKS[sys.argv[1]](int(sys.argv[2]), sys.argv[3])
