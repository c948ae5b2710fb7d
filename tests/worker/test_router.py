"""The router on its own: one conformance table, plus pattern validation."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from router import InvalidRoute, MatchKind, Router

ROUTES = [
    ("GET", "/"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{id:int}"),
    ("PATCH", "/users/{id:int}"),
    ("GET", "/users/{id:int}/posts"),
    ("GET", "/tags/{name}"),
    ("GET", "/files/{key:uuid}"),
    ("POST", "/posts/{id:int}/publish"),
]


@pytest.fixture(scope="module")
def router() -> Router[str]:
    table: Router[str] = Router()
    for method, pattern in ROUTES:
        table.add(method, pattern, f"{method} {pattern}")
    return table


# (method, path, expected kind, handler or allowed methods, params)
CASES: list[tuple[str, str, MatchKind, Any, dict[str, Any]]] = [
    ("GET", "/", MatchKind.FULL, "GET /", {}),
    ("GET", "/users", MatchKind.FULL, "GET /users", {}),
    ("POST", "/users", MatchKind.FULL, "POST /users", {}),
    ("GET", "/users/42", MatchKind.FULL, "GET /users/{id:int}", {"id": 42}),
    ("GET", "/users/-3", MatchKind.FULL, "GET /users/{id:int}", {"id": -3}),
    ("PATCH", "/users/7", MatchKind.FULL, "PATCH /users/{id:int}", {"id": 7}),
    ("GET", "/users/7/posts", MatchKind.FULL, "GET /users/{id:int}/posts", {"id": 7}),
    ("GET", "/tags/hello%20world", MatchKind.FULL, "GET /tags/{name}", {"name": "hello world"}),
    (
        "GET",
        "/files/a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        MatchKind.FULL,
        "GET /files/{key:uuid}",
        {"key": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
    ),
    ("HEAD", "/users/5", MatchKind.FULL, "GET /users/{id:int}", {"id": 5}),
    ("head", "/users", MatchKind.FULL, "GET /users", {}),
    ("DELETE", "/users", MatchKind.PARTIAL, ("GET", "HEAD", "POST"), {}),
    ("PUT", "/users/1", MatchKind.PARTIAL, ("GET", "HEAD", "PATCH"), {}),
    ("GET", "/posts/1/publish", MatchKind.PARTIAL, ("POST",), {}),
    ("GET", "/users/abc", MatchKind.NONE, None, {}),
    ("GET", "/users/9223372036854775807", MatchKind.FULL, "GET /users/{id:int}", {"id": 2**63 - 1}),
    ("GET", "/users/-9223372036854775808", MatchKind.FULL, "GET /users/{id:int}", {"id": -(2**63)}),
    ("GET", "/users/9223372036854775808", MatchKind.NONE, None, {}),
    ("PATCH", "/users/9223372036854775808", MatchKind.NONE, None, {}),
    ("GET", "/users/12345678901234567890", MatchKind.NONE, None, {}),
    ("GET", "/users%2F1", MatchKind.NONE, None, {}),
    ("GET", "/tags/a%2Fb", MatchKind.FULL, "GET /tags/{name}", {"name": "a/b"}),
    ("GET", "/tags/%ff", MatchKind.NONE, None, {}),
    ("GET", "/files/not-a-uuid", MatchKind.NONE, None, {}),
    ("GET", "/tags/", MatchKind.NONE, None, {}),
    ("GET", "/users/", MatchKind.NONE, None, {}),
    ("GET", "/nowhere", MatchKind.NONE, None, {}),
    ("GET", "", MatchKind.NONE, None, {}),
]


@pytest.mark.parametrize(
    ("method", "path", "kind", "expected", "params"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES]
)
def test_router_conformance_table(
    router: Router[str],
    method: str,
    path: str,
    kind: MatchKind,
    expected: Any,
    params: dict[str, Any],
) -> None:
    match = router.match(method, path)
    assert match.kind is kind
    if kind is MatchKind.FULL:
        assert match.route is not None and match.route.handler == expected
        assert match.params == params
    elif kind is MatchKind.PARTIAL:
        assert match.allowed == expected


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/users/", "/users"),
        ("/users/3/", "/users/3"),
        ("/users//", "/users"),
        ("/nowhere/", None),
        ("/", None),
        ("/users", None),
    ],
)
def test_a_trailing_slash_points_to_the_routed_path_without_it(
    router: Router[str], path: str, canonical: str | None
) -> None:
    assert router.canonical_path(path) == canonical


@pytest.mark.parametrize(
    ("method", "pattern", "message"),
    [
        ("GET", "users", "must start with '/'"),
        ("GET", "/users/{id:float}", "unknown converter"),
        ("GET", "/users/{id}/{id}", "appears twice"),
        ("GET", "/users/{id", "malformed parameter"),
        ("GET", "/users/id}", "malformed parameter"),
        ("GET", "/users/{1d}", "malformed parameter"),
        ("FETCH", "/users", "unsupported method"),
    ],
)
def test_bad_patterns_are_rejected_when_added(method: str, pattern: str, message: str) -> None:
    with pytest.raises(InvalidRoute, match=message):
        Router[str]().add(method, pattern, "handler")


def test_the_same_route_cannot_be_added_twice() -> None:
    router: Router[str] = Router()
    router.add("GET", "/a", "first")
    with pytest.raises(InvalidRoute, match="already defined"):
        router.add("GET", "/a", "second")


def test_routes_are_matched_in_the_order_they_were_added() -> None:
    router: Router[str] = Router()
    router.add("GET", "/items/latest", "latest")
    router.add("GET", "/items/{name}", "by name")
    assert router.match("GET", "/items/latest").route.handler == "latest"  # type: ignore[union-attr]
    assert router.match("GET", "/items/other").route.handler == "by name"  # type: ignore[union-attr]
