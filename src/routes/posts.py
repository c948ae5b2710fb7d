"""Posts: list (optionally only published), get, create, partial update, delete, publish,
and transfer to another author (an interactive transaction)."""

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
from db.client import Isolation, Statement, sql
from db.errors import KeyHasOutcome
from db.transaction import Transaction
from errors import Conflict, NotFound, ValidationFailed
from idempotency import IdempotencyKey, claim, kept, stored_outcome
from inputs import keyset_window, page, parse_body, query_bool, reject_explicit_nulls
from models import Post, PostCreate, PostTransfer, PostUpdate
from paging import bounded_page_sql
from web import Response, json_response

COLUMNS = "id, author_id, title, body, published, published_at, created_at, updated_at"
# A user holds at most this many drafts (unpublished posts): a new post or a transfer
# that would give them more is refused (409).
MAX_DRAFTS = 5


def post_missing(post_id: int) -> NotFound:
    return NotFound(f"post {post_id} does not exist")


async def list_posts(ctx: Context) -> Response:
    """Published posts are cached (tag published_posts); drafts never are."""
    published = query_bool(ctx.request, "published")
    listing = {"list": "/posts", "published": published}
    limit, after = keyset_window(ctx.request, listing)
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
    return with_cache_status(json_response(page(result.rows, limit, Post, listing)), result)


async def get_post(ctx: Context) -> Response:
    row = await ctx.db.query_one(f"SELECT {COLUMNS} FROM posts WHERE id = $1", ctx.params["id"])
    if row is None:
        raise post_missing(ctx.params["id"])
    return json_response(Post.of(row))


def too_many_drafts(user_id: int, drafts: int = 0) -> Conflict:
    return Conflict(
        f"user {user_id} already has {max(drafts, MAX_DRAFTS)} drafts (at most {MAX_DRAFTS})"
    )


def lock_author(user_id: int) -> Statement:
    """Taken before anything counts a user's drafts to add one, in the same transaction:
    two such writes for one author run one after the other, and the second counts the
    first's draft. An UPDATE (a new row version), not SELECT ... FOR UPDATE: a
    Serializable transfer whose snapshot is older then fails to serialize and runs again
    instead of counting stale drafts."""
    return sql("UPDATE users SET updated_at = updated_at WHERE id = $1", user_id)


async def create_post(ctx: Context) -> Response:
    """A new post is a draft, refused (409) when its author has MAX_DRAFTS already."""
    data = parse_body(ctx.request, PostCreate)
    # only its author's list changes; an unknown author is refused by the foreign key
    result = await ctx.write(
        sql(
            "INSERT INTO posts (author_id, title, body) SELECT $1, $2, $3"
            " WHERE (SELECT count(*) FROM posts WHERE author_id = $1 AND NOT published) < $4"
            f" RETURNING {COLUMNS}",
            data.author_id,
            data.title,
            data.body,
            MAX_DRAFTS,
        ),
        invalidate=(user_posts(data.author_id),),
        before=(lock_author(data.author_id),),
    )
    if not result.rows:  # kept under its key, like a 404: a retry replays the 409
        raise too_many_drafts(data.author_id)
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


TRANSFER_RETRIES = 3  # re-runs after a serialization failure with a concurrent transfer


async def transfer_post(ctx: Context) -> Response:
    """Move a post to another author, if that author exists and has fewer than
    MAX_DRAFTS drafts: read, decide, write, in one Serializable transaction, so two
    transfers racing to the same author can never leave them with more."""
    data = parse_body(ctx.request, PostTransfer)
    post_id, to_user = ctx.params["id"], data.to_user_id
    key = ctx.idempotency
    try:
        async for attempt in ctx.db.transaction(
            isolation=Isolation.SERIALIZABLE, retries=TRANSFER_RETRIES
        ):
            async with attempt as tx:
                if key is not None:
                    await tx.run(claim(key))
                row = await _transfer(tx, post_id, to_user, key)
    except KeyHasOutcome:
        assert key is not None
        ctx.replayed = True
        row = (await stored_outcome(ctx.db, key)).rows[0]
    return json_response(Post.model_validate(row))


async def _transfer(
    tx: Transaction, post_id: int, to_user: int, key: IdempotencyKey | None
) -> dict[str, Any]:
    post = await tx.query_one("SELECT author_id FROM posts WHERE id = $1 FOR UPDATE", post_id)
    if post is None:
        raise post_missing(post_id)
    locked = await tx.run(lock_author(to_user))  # as create_post does: see lock_author
    target = await tx.query_one(
        "SELECT count(*) AS drafts FROM posts WHERE author_id = $1 AND NOT published", to_user
    )
    if not locked.row_count or target is None:
        raise ValidationFailed(
            f"user {to_user} does not exist",
            [{"field": "to_user_id", "message": f"user {to_user} does not exist"}],
        )
    if post["author_id"] != to_user and target["drafts"] >= MAX_DRAFTS:
        raise too_many_drafts(to_user, target["drafts"])
    move = sql(
        f"UPDATE posts SET author_id = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
        post_id,
        to_user,
    )
    tags = (PUBLISHED_POSTS, user_posts(post["author_id"]), user_posts(to_user))
    result = await tx.run(move if key is None else kept(key, move), invalidate=tags)
    return result.rows[0]
