"""Posts: list (optionally only published), get, create, partial update, delete, publish."""

from __future__ import annotations

from app import Context
from errors import NotFound
from inputs import decode_cursor, page, parse_body, query_bool, query_int, reject_explicit_nulls
from models import Post, PostCreate, PostUpdate
from web import Response, json_response

COLUMNS = "id, author_id, title, body, published, published_at, created_at, updated_at"


def post_missing(post_id: int) -> NotFound:
    return NotFound(f"post {post_id} does not exist")


async def list_posts(ctx: Context) -> Response:
    limit = query_int(ctx.request, "limit", 20, 1, 100)
    after = decode_cursor(ctx.request) or 0
    published = query_bool(ctx.request, "published")
    rows = await ctx.db.query(
        f"SELECT {COLUMNS} FROM posts WHERE id > $1 AND ($2::boolean IS NULL OR published = $2)"
        " ORDER BY id LIMIT $3",
        after,
        published,
        limit + 1,
    )
    return json_response(page(rows, limit, Post))


async def get_post(ctx: Context) -> Response:
    row = await ctx.db.query_one(f"SELECT {COLUMNS} FROM posts WHERE id = $1", ctx.params["id"])
    if row is None:
        raise post_missing(ctx.params["id"])
    return json_response(Post.model_validate(row))


async def create_post(ctx: Context) -> Response:
    data = parse_body(ctx.request, PostCreate)
    row = await ctx.db.query_one(
        f"INSERT INTO posts (author_id, title, body) VALUES ($1, $2, $3) RETURNING {COLUMNS}",
        data.author_id,
        data.title,
        data.body,
    )
    assert row is not None
    return json_response(
        Post.model_validate(row), status=201, headers={"location": f"/posts/{row['id']}"}
    )


async def update_post(ctx: Context) -> Response:
    data = parse_body(ctx.request, PostUpdate)
    given = reject_explicit_nulls(data)
    row = await ctx.db.query_one(
        "UPDATE posts SET"
        " title = CASE WHEN $2 THEN $3 ELSE title END,"
        " body = CASE WHEN $4 THEN $5 ELSE body END,"
        " updated_at = CASE WHEN $2 OR $4 THEN now() ELSE updated_at END"
        f" WHERE id = $1 RETURNING {COLUMNS}",
        ctx.params["id"],
        "title" in given,
        data.title,
        "body" in given,
        data.body,
    )
    if row is None:
        raise post_missing(ctx.params["id"])
    return json_response(Post.model_validate(row))


async def delete_post(ctx: Context) -> Response:
    if not await ctx.db.execute("DELETE FROM posts WHERE id = $1", ctx.params["id"]):
        raise post_missing(ctx.params["id"])
    return json_response({"deleted": True, "id": ctx.params["id"]})


async def publish_post(ctx: Context) -> Response:
    row = await ctx.db.query_one(
        "UPDATE posts SET published = true, published_at = coalesce(published_at, now()),"
        f" updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
        ctx.params["id"],
    )
    if row is None:
        raise post_missing(ctx.params["id"])
    return json_response(Post.model_validate(row))
