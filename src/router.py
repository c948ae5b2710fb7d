"""A tiny router, generic over the handler: it knows nothing of requests or responses.

Patterns are compiled once into regexes with named groups when they are added (a bad
pattern is rejected right there) and matched in the order they were added.

    router = Router[Handler]()
    router.add("GET", "/users/{id:int}", get_user)
    match = router.match("GET", "/users/7")    # Match(FULL, get_user, {"id": 7})

A path that matches under other methods only gives a PARTIAL match carrying the allowed
methods (for 405 + Allow); HEAD is served by GET. Trailing slashes are significant:
`/users/` does not match `/users`; `canonical_path` says where such a path should go.

Paths are matched as sent, percent-encoding kept, so `%2F` never splits a segment; a
`str` parameter is decoded after matching. An `int` parameter is a bigint (-2^63 to
2^63-1): a segment outside that range does not match at all (404, not 405).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar
from urllib.parse import unquote
from uuid import UUID

H = TypeVar("H")

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?}")


def _bigint(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text} is outside bigint's range")
    return value


def _decoded(text: str) -> str:
    return unquote(text, errors="strict")


# converter name -> (regex for the segment, function from segment text to value)
CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", _decoded),
    "int": (r"-?[0-9]{1,19}", _bigint),
    "uuid": (r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", UUID),
}
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class InvalidRoute(ValueError):
    """Raised when a route is added with a malformed pattern or an unknown method."""


class MatchKind(Enum):
    NONE = 0
    PARTIAL = 1  # the path matches, the method does not
    FULL = 2


@dataclass(frozen=True, slots=True)
class Route(Generic[H]):
    method: str
    pattern: str
    handler: H
    regex: re.Pattern[str]
    converters: dict[str, Callable[[str], Any]]
    params: tuple[tuple[str, str], ...]  # (name, converter name), in pattern order


@dataclass(frozen=True, slots=True)
class Match(Generic[H]):
    kind: MatchKind
    route: Route[H] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()


def compile_pattern(
    pattern: str,
) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]], tuple[tuple[str, str], ...]]:
    if not pattern.startswith("/"):
        raise InvalidRoute(f"route pattern must start with '/': {pattern!r}")
    regex, converters, params = "", {}, []
    position = 0
    for found in _PARAM.finditer(pattern):
        literal = pattern[position : found.start()]
        if "{" in literal or "}" in literal:
            raise InvalidRoute(f"malformed parameter in route pattern {pattern!r}")
        regex += re.escape(literal)
        name, kind = found.group(1), found.group(2) or "str"
        if kind not in CONVERTERS:
            raise InvalidRoute(
                f"unknown converter {kind!r} in {pattern!r}; use one of {sorted(CONVERTERS)}"
            )
        if name in converters:
            raise InvalidRoute(f"parameter {name!r} appears twice in {pattern!r}")
        segment, convert = CONVERTERS[kind]
        regex += f"(?P<{name}>{segment})"
        converters[name] = convert
        params.append((name, kind))
        position = found.end()
    tail = pattern[position:]
    if "{" in tail or "}" in tail:
        raise InvalidRoute(f"malformed parameter in route pattern {pattern!r}")
    regex += re.escape(tail)
    return re.compile(f"^{regex}$"), converters, tuple(params)


class Router(Generic[H]):
    def __init__(self) -> None:
        self.routes: list[Route[H]] = []

    def add(self, method: str, pattern: str, handler: H) -> Route[H]:
        method = method.upper()
        if method not in METHODS:
            raise InvalidRoute(f"unsupported method {method!r}; use one of {sorted(METHODS)}")
        if any(r.method == method and r.pattern == pattern for r in self.routes):
            raise InvalidRoute(f"route {method} {pattern} is already defined")
        regex, converters, params = compile_pattern(pattern)
        route = Route(method, pattern, handler, regex, converters, params)
        self.routes.append(route)
        return route

    def match(self, method: str, path: str) -> Match[H]:
        method = method.upper()
        wanted = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            try:
                params = {
                    name: route.converters[name](value) for name, value in found.groupdict().items()
                }
            except ValueError:
                continue
            if route.method == wanted:
                return Match(MatchKind.FULL, route, params)
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            return Match(MatchKind.PARTIAL, allowed=tuple(sorted(allowed)))
        return Match(MatchKind.NONE)

    def canonical_path(self, path: str) -> str | None:
        """For `/users/` when `/users` is routed: the path without the trailing slash."""
        if len(path) > 1 and path.endswith("/"):
            trimmed = path.rstrip("/") or "/"
            if any(route.regex.match(trimmed) for route in self.routes):
                return trimmed
        return None
