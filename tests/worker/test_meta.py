"""The index, the health check and the OpenAPI document; 404, 405, HEAD and redirects."""

from __future__ import annotations

from tests.worker.conftest import WorkerClient


async def test_index_lists_name_version_and_every_route_in_openapi_syntax(
    client: WorkerClient,
) -> None:
    reply = await client.get("/")
    assert reply.status == 200
    index = reply.json()
    assert (index["name"], index["version"]) == ("pooled-worker", "0.1.0")
    assert {"method": "GET", "path": "/users/{id}", "summary": "One user"} in index["routes"]
    documented = (await client.get("/openapi.json")).json()["paths"]
    assert {route["path"] for route in index["routes"]} == set(documented)
    assert (index["explorer"], index["openapi"]) == ("/docs", "/openapi.json")


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_browser_asking_for_the_index_gets_a_page_linking_the_explorer(
    client: WorkerClient,
) -> None:
    page = await client.get("/", headers={"accept": BROWSER_ACCEPT})
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'href="/docs"' in page.body and b'href="/openapi.json"' in page.body
    for accept in ("*/*", "application/json", "application/json, text/html", ""):
        headers = {"accept": accept} if accept else {}
        answer = await client.get("/", headers=headers)
        assert answer.headers["content-type"] == "application/json; charset=utf-8", accept


async def test_health_reports_a_database_round_trip_and_its_latency(client: WorkerClient) -> None:
    reply = await client.get("/health")
    assert reply.status == 200
    health = reply.json()
    assert health["status"] == "ok" and health["database"]["reachable"] is True
    assert 0 < health["database"]["latency_ms"] < 5000


async def test_unknown_path_is_a_json_404(client: WorkerClient) -> None:
    reply = await client.get("/nowhere")
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.json()["error"]["code"] == "not_found"


async def test_wrong_method_is_a_json_405_with_allow(client: WorkerClient) -> None:
    reply = await client.request("PUT", "/users")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert reply.json()["error"]["details"] == {"allowed": ["GET", "HEAD", "OPTIONS", "POST"]}


async def test_head_is_answered_by_get_without_a_body(client: WorkerClient) -> None:
    reply = await client.request("HEAD", "/")
    assert reply.status == 200 and reply.body == b""
    assert int(reply.headers["content-length"]) > 0


async def test_trailing_slash_redirects_to_the_canonical_path_keeping_the_query(
    client: WorkerClient,
) -> None:
    reply = await client.get("/users/?limit=5")
    assert reply.status == 308
    assert reply.headers["location"] == "/users?limit=5"
    assert reply.json() == {"redirect": "/users?limit=5"}
    encoded = await client.get("/logs/?level=info&cursor=a%2Bb%20c")
    assert encoded.headers["location"] == "/logs?level=info&cursor=a%2Bb%20c"


async def test_openapi_describes_bodies_responses_and_parameters(client: WorkerClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    create = document["paths"]["/users"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UserCreate"
    }
    assert set(create["responses"]) == {
        *("201", "400", "409", "413", "414", "415", "422", "431", "500", "502", "503", "504")
    }
    get_user = document["paths"]["/users/{id}"]["get"]
    assert get_user["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    assert "email" in document["components"]["schemas"]["User"]["properties"]
