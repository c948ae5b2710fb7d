"""Users: keyset-paginated list, get, create, partial update, delete, and their posts."""

from __future__ import annotations

from app import Context
from caching import (
    PUBLISHED_POSTS,
    invalidate_after_write,
    read_cache,
    user_posts,
    with_cache_status,
)
from db.client import sql
from errors import NotFound
from inputs import keyset_window, page, parse_body, reject_explicit_nulls
from models import Post, User, UserCreate, UserUpdate
from paging import bounded_page_sql
from routes.posts import COLUMNS as POST_COLUMNS
from web import Response, json_response

COLUMNS = "id, email, name, created_at, updated_at"


def user_missing(user_id: int) -> NotFound:
    return NotFound(f"user {user_id} does not exist")


async def list_users(ctx: Context) -> Response:
    listing = {"list": "/users"}
    limit, after = keyset_window(ctx.request, listing)
    rows = await ctx.db.query(
        f"SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2", after, limit + 1
    )
    return json_response(page(rows, limit, User, listing))


async def get_user(ctx: Context) -> Response:
    row = await ctx.db.query_one(f"SELECT {COLUMNS} FROM users WHERE id = $1", ctx.params["id"])
    if row is None:
        raise user_missing(ctx.params["id"])
    return json_response(User.of(row))


async def create_user(ctx: Context) -> Response:
    data = parse_body(ctx.request, UserCreate)
    result = await ctx.write(
        sql(
            f"INSERT INTO users (email, name) VALUES ($1, $2) RETURNING {COLUMNS}",
            data.email,
            data.name,
        )
    )
    row = result.rows[0]
    # a cached "no such user" for this id, if anyone asked before it existed, goes too
    await invalidate_after_write(ctx.db, user_posts(row["id"]))
    return json_response(
        User.model_validate(row), status=201, headers={"location": f"/users/{row['id']}"}
    )


async def update_user(ctx: Context) -> Response:
    data = parse_body(ctx.request, UserUpdate)
    given = reject_explicit_nulls(data)
    result = await ctx.write(
        sql(
            "UPDATE users SET"
            " email = CASE WHEN $2 THEN $3 ELSE email END,"
            " name = CASE WHEN $4 THEN $5 ELSE name END,"
            " updated_at = CASE WHEN $2 OR $4 THEN now() ELSE updated_at END"
            f" WHERE id = $1 RETURNING {COLUMNS}",
            ctx.params["id"],
            "email" in given,
            data.email,
            "name" in given,
            data.name,
        )
    )
    if not result.rows:
        raise user_missing(ctx.params["id"])
    return json_response(User.model_validate(result.rows[0]))


async def delete_user(ctx: Context) -> Response:
    # their posts go with them (ON DELETE CASCADE): published ones leave the public list
    deleted = await ctx.write(
        sql("DELETE FROM users WHERE id = $1 RETURNING id", ctx.params["id"]),
        invalidate=(PUBLISHED_POSTS, user_posts(ctx.params["id"])),
    )
    if not deleted.rows:
        raise user_missing(ctx.params["id"])
    return json_response({"deleted": True, "id": ctx.params["id"]})


async def list_user_posts(ctx: Context) -> Response:
    user_id = ctx.params["id"]
    listing = {"list": f"/users/{user_id}/posts"}
    limit, after = keyset_window(ctx.request, listing)
    found, posts = await ctx.db.batch(
        [
            sql("SELECT 1 FROM users WHERE id = $1", user_id),
            sql(
                bounded_page_sql(
                    POST_COLUMNS,
                    "posts WHERE author_id = $1 AND id > $2",
                    order="id",
                    size="octet_length(body)",
                    limit="$3",
                ),
                user_id,
                after,
                limit + 1,
            ),
        ],
        read_only=True,
        cache=read_cache(ctx.request, user_posts(user_id)),
    )
    if not found.rows:
        raise user_missing(user_id)
    return with_cache_status(json_response(page(posts.rows, limit, Post, listing)), posts)
