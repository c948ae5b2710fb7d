"""The whole API in one place: every route, its handler, and what it takes and returns."""

from __future__ import annotations

from app import App, QueryParam, RouteSpec
from models import (
    Log,
    LogCreate,
    Page,
    Post,
    PostCreate,
    PostTransfer,
    PostUpdate,
    User,
    UserCreate,
    UserUpdate,
)
from routes import logs, meta, posts, users

_LIMIT = QueryParam("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 100})
_CURSOR = QueryParam(
    "cursor",
    "opaque cursor from the previous page's next_cursor, for the same listing and"
    " filters (empty: the first page; any other, another listing's included:"
    " 400 bad_cursor)",
    {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
)
_DELETED = {
    "type": "object",
    "properties": {"deleted": {"type": "boolean"}, "id": {"type": "integer"}},
}
_DATABASE = (502, 503)  # the endpoint failed / the database is unavailable
_WRITE_ERRORS = (400, 413, 415, 422, *_DATABASE)

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/", meta.index, "API index: name, version and every route"),
    RouteSpec(
        "GET", "/health", meta.health, "Database round trip and its latency", errors=_DATABASE
    ),
    RouteSpec("GET", "/openapi.json", meta.openapi, "This API's OpenAPI 3.1 document"),
    RouteSpec(
        "GET",
        "/logs",
        logs.list_logs,
        "Request and client logs, newest first",
        response=Page,
        query=(
            QueryParam("level", "only this level", {"enum": ["debug", "info", "warning", "error"]}),
            QueryParam("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 200}),
            _CURSOR,
        ),
        errors=(400, *_DATABASE),
    ),
    RouteSpec(
        "POST",
        "/logs",
        logs.create_log,
        "Add a log entry",
        body=LogCreate,
        response=Log,
        status=201,
        errors=_WRITE_ERRORS,
    ),
    RouteSpec(
        "GET",
        "/users",
        users.list_users,
        "Users, by id, keyset-paginated",
        response=Page,
        query=(_LIMIT, _CURSOR),
        errors=(400, *_DATABASE),
    ),
    RouteSpec(
        "POST",
        "/users",
        users.create_user,
        "Create a user (email unique)",
        body=UserCreate,
        response=User,
        status=201,
        errors=(*_WRITE_ERRORS, 409),
    ),
    RouteSpec(
        "GET",
        "/users/{id:int}",
        users.get_user,
        "One user",
        response=User,
        errors=(404, *_DATABASE),
    ),
    RouteSpec(
        "PATCH",
        "/users/{id:int}",
        users.update_user,
        "Change some of a user's fields",
        body=UserUpdate,
        response=User,
        errors=(*_WRITE_ERRORS, 404, 409),
    ),
    RouteSpec(
        "DELETE",
        "/users/{id:int}",
        users.delete_user,
        "Delete a user and their posts",
        response=_DELETED,
        errors=(404, *_DATABASE),
    ),
    RouteSpec(
        "GET",
        "/users/{id:int}/posts",
        users.list_user_posts,
        "A user's posts",
        response=Page,
        query=(_LIMIT, _CURSOR),
        errors=(400, 404, *_DATABASE),
    ),
    RouteSpec(
        "GET",
        "/posts",
        posts.list_posts,
        "Posts, by id, keyset-paginated",
        response=Page,
        query=(
            QueryParam(
                "published", "only published (true) or drafts (false)", {"enum": ["true", "false"]}
            ),
            _LIMIT,
            _CURSOR,
        ),
        errors=(400, *_DATABASE),
    ),
    RouteSpec(
        "POST",
        "/posts",
        posts.create_post,
        "Create a draft post",
        body=PostCreate,
        response=Post,
        status=201,
        errors=_WRITE_ERRORS,
    ),
    RouteSpec(
        "GET",
        "/posts/{id:int}",
        posts.get_post,
        "One post",
        response=Post,
        errors=(404, *_DATABASE),
    ),
    RouteSpec(
        "PATCH",
        "/posts/{id:int}",
        posts.update_post,
        "Change a post's title or body",
        body=PostUpdate,
        response=Post,
        errors=(*_WRITE_ERRORS, 404),
    ),
    RouteSpec(
        "DELETE",
        "/posts/{id:int}",
        posts.delete_post,
        "Delete a post",
        response=_DELETED,
        errors=(404, *_DATABASE),
    ),
    RouteSpec(
        "POST",
        "/posts/{id:int}/publish",
        posts.publish_post,
        "Publish a post",
        response=Post,
        errors=(404, *_DATABASE),
    ),
    RouteSpec(
        "POST",
        "/posts/{id:int}/transfer",
        posts.transfer_post,
        f"Move a post to another author (who must have fewer than {posts.MAX_DRAFTS} drafts)",
        body=PostTransfer,
        response=Post,
        errors=(404, 409, 422, *_DATABASE),
    ),
)


def build_app() -> App:
    return App(ROUTES)
