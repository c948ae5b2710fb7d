"""Posts: list (optionally only published), get, create, partial update, delete, publish."""

from __future__ import annotations

from typing import Any

from app import Context
from caching import (
    PUBLISHED_POSTS,
    invalidate_after_write,
    read_cache,
    user_posts,
    with_cache_status,
)
from db.client import Statement, sql
from errors import NotFound
from inputs import keyset_window, page, parse_body, query_bool, reject_explicit_nulls
from models import Post, PostCreate, PostUpdate
from paging import bounded_page_sql
from web import Response, json_response

COLUMNS = "id, author_id, title, body, published, published_at, created_at, updated_at"


def post_missing(post_id: int) -> NotFound:
    return NotFound(f"post {post_id} does not exist")


async def list_posts(ctx: Context) -> Response:
    """Published posts are cached (tag published_posts); drafts never are."""
    limit, after = keyset_window(ctx.request)
    published = query_bool(ctx.request, "published")
    result = await ctx.db.run(
        sql(
            bounded_page_sql(
                COLUMNS,
                "posts WHERE id > $1 AND ($2::boolean IS NULL OR published = $2)",
                order="id",
                size="octet_length(body)",
                limit="$3",
            ),
            after,
            published,
            limit + 1,
        ),
        cache=read_cache(ctx.request, PUBLISHED_POSTS) if published else None,
    )
    return with_cache_status(json_response(page(result.rows, limit, Post)), result)


async def get_post(ctx: Context) -> Response:
    row = await ctx.db.query_one(f"SELECT {COLUMNS} FROM posts WHERE id = $1", ctx.params["id"])
    if row is None:
        raise post_missing(ctx.params["id"])
    return json_response(Post.model_validate(row))


async def create_post(ctx: Context) -> Response:
    data = parse_body(ctx.request, PostCreate)
    # a new post is a draft: only its author's list changes
    result = await ctx.write(
        sql(
            f"INSERT INTO posts (author_id, title, body) VALUES ($1, $2, $3) RETURNING {COLUMNS}",
            data.author_id,
            data.title,
            data.body,
        ),
        invalidate=(user_posts(data.author_id),),
    )
    row = result.rows[0]
    return json_response(
        Post.model_validate(row), status=201, headers={"location": f"/posts/{row['id']}"}
    )


async def write_post(ctx: Context, statement: Statement) -> dict[str, Any]:
    """Run a write returning the post's row, then invalidate every read it can change:
    the published list (with the write itself, once it commits) and the author's list
    (known only from the returned row)."""
    result = await ctx.write(statement, invalidate=(PUBLISHED_POSTS,))
    if not result.rows:
        raise post_missing(ctx.params["id"])
    row = result.rows[0]
    await invalidate_after_write(ctx.db, user_posts(row["author_id"]))
    return row


async def update_post(ctx: Context) -> Response:
    data = parse_body(ctx.request, PostUpdate)
    given = reject_explicit_nulls(data)
    row = await write_post(
        ctx,
        sql(
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
        ),
    )
    return json_response(Post.model_validate(row))


async def delete_post(ctx: Context) -> Response:
    await write_post(
        ctx, sql("DELETE FROM posts WHERE id = $1 RETURNING author_id", ctx.params["id"])
    )
    return json_response({"deleted": True, "id": ctx.params["id"]})


async def publish_post(ctx: Context) -> Response:
    row = await write_post(
        ctx,
        sql(
            "UPDATE posts SET published = true, published_at = coalesce(published_at, now()),"
            f" updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
            ctx.params["id"],
        ),
    )
    return json_response(Post.model_validate(row))
