"""`/openapi.json`, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, TypeAdapter

from app import NAME, VERSION, WRITE_METHODS, RouteSpec
from router import compile_pattern

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
                "request_id": {"type": "string"},
            },
        }
    },
}
# What any request can be answered with: URL or headers over the limits, a bug.
ANY_ROUTE_ERRORS = (414, 431, 500)
# And any write: a bad or busy or reused Idempotency-Key, a body over 1 MiB (refused
# before a route looks at it), an outcome that is unknown.
ANY_WRITE_ERRORS = (400, 409, 413, 422, 504)
# And any route that takes a body (inputs.parse_body): not JSON, over 1 MiB, not of
# media type application/json, fields that fail validation.
ANY_BODY_ERRORS = (400, 413, 415, 422)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retry this write safely: the same key and request within 24 h replay the"
    " first outcome (idempotent-replayed: true); another request with it is 422; the"
    " same key while the first runs is 409.",
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}
_PARAM_SCHEMAS = {
    "int": {"type": "integer"},
    "str": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _schema(shape: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if shape is None:
        return {"type": "object"}
    if isinstance(shape, dict):
        return shape
    schema = TypeAdapter(shape).json_schema(ref_template="#/components/schemas/{model}")
    definitions.update(schema.pop("$defs", {}))
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        definitions[shape.__name__] = schema
        return {"$ref": f"#/components/schemas/{shape.__name__}"}
    return schema


def openapi_path(path: str) -> str:
    """A route pattern in OpenAPI's syntax: `/users/{id:int}` is `/users/{id}`."""
    return re.sub(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}", r"{\1}", path)


def build_openapi(routes: tuple[RouteSpec, ...]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    definitions: dict[str, Any] = {}
    for spec in routes:
        _, _, params = compile_pattern(spec.path)
        path = openapi_path(spec.path)
        operation: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": spec.handler.__name__,
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": _PARAM_SCHEMAS[kind]}
                for name, kind in params
            ]
            + [
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": f"{q.description}; at most once (repeated: 400 bad_request)",
                    "schema": q.schema,
                }
                for q in spec.query
            ],
            "responses": {
                str(spec.status): {
                    "description": HTTPStatus(spec.status).phrase,
                    "content": {
                        "application/json": {"schema": _schema(spec.response, definitions)}
                    },
                },
            },
        }
        writes = spec.method in WRITE_METHODS
        if writes:
            operation["parameters"].append(IDEMPOTENCY_KEY)
        takes_body = spec.body is not None
        for status in sorted(
            {
                *spec.errors,
                *ANY_ROUTE_ERRORS,
                *(ANY_WRITE_ERRORS * writes),
                *(ANY_BODY_ERRORS * takes_body),
            }
        ):
            operation["responses"][str(status)] = {
                "description": HTTPStatus(status).phrase,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if spec.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(spec.body, definitions)}},
            }
        paths.setdefault(path, {})[spec.method.lower()] = operation
    definitions["Error"] = _ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": NAME,
            "version": VERSION,
            "description": "A Cloudflare Python Worker reaching PostgreSQL over HTTP "
            "through a connection pool.",
        },
        "paths": paths,
        "components": {"schemas": definitions},
    }
