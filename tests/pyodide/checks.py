"""Checks that run INSIDE Pyodide (see harness.mjs); the pytest side asserts on the results.

Real JS `Request`s go through the Workers adapter with a route table of this file's own
(pydantic's compiled core is not available offline in Pyodide, so the real handlers
are not loaded here); queries go through the fetch-based transport to the real gateway.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import js
from pyodide.ffi import create_proxy, to_js


def js_object(values: dict[str, Any]) -> Any:
    return to_js(values, dict_converter=js.Object.fromEntries)


def js_request(
    url: str, method: str = "GET", body: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    init: dict[str, Any] = {"method": method, "headers": js_object(headers or {})}
    if body is not None:
        init["body"] = body
    return js.Request.new(url, js_object(init))


async def main(config: dict[str, Any]) -> dict[str, Any]:
    import workers

    from app import App, Context, RouteSpec
    from db.client import Database, Isolation, sql
    from db.config import DatabaseConfig
    from db.errors import DatabaseUnavailable, QueryError
    from errors import MalformedJson
    from web import Response, json_response
    from workers_adapter import FetchTransport, WorkersAdapter

    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "heavy_modules_loaded": sorted(
            m for m in ("pydantic", "httpx", "routes.table") if m in sys.modules
        ),
    }

    async def echo(ctx: Context) -> Response:
        try:
            body = json.loads(ctx.request.body) if ctx.request.body else None
        except ValueError:
            raise MalformedJson("the body is not valid JSON") from None
        return json_response(
            {
                "method": ctx.request.method,
                "path": ctx.request.path,
                "query": dict(ctx.request.query),
                "body": body,
                "x_test": ctx.request.headers.get("x-test"),
            }
        )

    async def boom(ctx: Context) -> Response:
        raise RuntimeError("internal detail that must not leak")

    async def add_one(ctx: Context) -> Response:
        row = await ctx.db.query_one("SELECT $1::int + 1 AS n", int(ctx.request.query["n"]))
        return json_response(row)

    app = App(
        [
            RouteSpec("GET", "/echo", echo, "echo"),
            RouteSpec("POST", "/echo", echo, "echo"),
            RouteSpec("GET", "/boom", boom, "boom"),
            RouteSpec("GET", "/db", add_one, "db"),
        ]
    )
    adapter = WorkersAdapter(app.handle)
    env = js_object(
        {
            "DATABASE_URL": config["connection_string"],
            "DATABASE_HTTP_ENDPOINT": config["gateway_url"] + "/sql",
            "LOCAL_DEVELOPMENT": "true",  # the test gateway listens on a custom port
        }
    )
    deferred: list[Any] = []
    ctx = js_object({})
    ctx.waitUntil = create_proxy(deferred.append)

    async def call(request: Any) -> dict[str, Any]:
        response = await adapter.serve(request, env, ctx)
        text = await response.text()
        return {
            "status": response.status,
            "headers": dict(response.headers),
            "body": json.loads(text) if text else None,
            "raw_length": len(text),
            "type": type(response).__name__,
        }

    base = "http://worker.test"
    results["get_with_query"] = await call(
        js_request(f"{base}/echo?a=1&b=two%20words", headers={"X-Test": "yes"})
    )
    results["post_json"] = await call(
        workers.Request(
            js_request(
                f"{base}/echo",
                "POST",
                json.dumps({"k": [1, "é"]}),
                {"content-type": "application/json"},
            )
        )
    )
    results["head"] = await call(js_request(f"{base}/echo", "HEAD"))
    results["bad_json"] = await call(
        js_request(f"{base}/echo", "POST", "{not json", {"content-type": "application/json"})
    )
    results["oversized"] = await call(js_request(f"{base}/echo", "POST", "x" * (1024 * 1024 + 10)))
    results["not_found"] = await call(js_request(f"{base}/nowhere"))
    results["wrong_method"] = await call(js_request(f"{base}/echo", "PUT"))
    results["unhandled"] = await call(js_request(f"{base}/boom"))
    results["through_database"] = await call(js_request(f"{base}/db?n=41"))
    # as deployed: no LOCAL_DEVELOPMENT, so the gateway's custom port is refused
    deployed_env = js_object(
        {
            "DATABASE_URL": config["connection_string"],
            "DATABASE_HTTP_ENDPOINT": config["gateway_url"] + "/sql",
        }
    )
    deployed = WorkersAdapter(app.handle)
    custom_port = await deployed.serve(js_request(f"{base}/db?n=1"), deployed_env, ctx)
    results["custom_port_deployed"] = {
        "status": custom_port.status,
        "body": json.loads(await custom_port.text()),
    }

    # WorkerEntrypoint as entry.py declares it: ctx and env wrapped by the SDK
    class Default(workers.WorkerEntrypoint):
        async def fetch(self, request: Any) -> Any:
            return await adapter.serve(request, self.env, self.ctx)

    entry_response = await Default(ctx, env).fetch(js_request(f"{base}/db?n=1"))
    results["entrypoint"] = {
        "status": entry_response.status,
        "body": json.loads(await entry_response.text()),
    }
    results["deferred_count"] = len(deferred)
    for work in deferred:
        await work

    # the fetch-based transport on its own, against the real gateway
    def database(endpoint: str) -> Database:
        return Database(
            DatabaseConfig.from_env(
                {
                    "DATABASE_URL": config["connection_string"],
                    "DATABASE_HTTP_ENDPOINT": endpoint,
                    "DATABASE_TIMEOUT_SECONDS": "5",
                    "LOCAL_DEVELOPMENT": "true",
                }
            ),
            FetchTransport(),
        )

    db = database(config["gateway_url"] + "/sql")
    row = await db.query_one(
        "SELECT $1::int8 AS big, $2::numeric AS exact, now() AS at,"
        " ARRAY[1, NULL] AS arr, '\\x00ff'::bytea AS raw",
        9007199254740993,
        "1.10",
    )
    assert row is not None
    results["single_query"] = {
        "big": row["big"],
        "exact": str(row["exact"]),
        "at_is_aware": row["at"].tzinfo is not None,
        "arr": row["arr"],
        "raw": list(row["raw"]),
    }
    batch = await db.batch([sql("SELECT 1 AS a"), sql("SELECT $1::text AS b", "x")], read_only=True)
    results["batch"] = [result.rows for result in batch]
    # an interactive transaction: several fetches on one reserved connection
    async with db.transaction(isolation=Isolation.SERIALIZABLE) as tx:
        await tx.execute("CREATE TEMP TABLE IF NOT EXISTS pyodide_tx (n int)")
        await tx.execute("INSERT INTO pyodide_tx VALUES ($1)", 7)
        inside = await tx.query("SELECT n FROM pyodide_tx")
        level = await tx.query_one("SHOW transaction_isolation")
    rolled_back = "no"
    try:
        async with db.transaction() as tx:
            await tx.execute("SELECT 1")
            raise RuntimeError("roll it back")
    except RuntimeError:
        rolled_back = "yes"
    results["transaction"] = {"inside": inside, "level": level, "rolled_back": rolled_back}
    try:
        await db.query("SELECT 1/0")
        results["postgres_error"] = None
    except QueryError as error:
        results["postgres_error"] = {
            "type": type(error).__name__,
            "sqlstate": error.sqlstate,
            "message": error.message,
        }
    try:
        await database(config["stopped_gateway_url"] + "/sql").query("SELECT 1")
        results["gateway_stopped"] = None
    except DatabaseUnavailable as error:
        results["gateway_stopped"] = {"type": type(error).__name__, "reason": error.reason}
    return results
