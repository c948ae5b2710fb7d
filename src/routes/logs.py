"""Logs: every API request writes one (see app); clients can read and add them."""

from __future__ import annotations

from app import Context
from db.client import sql
from inputs import decode_cursor, page, parse_body, query_choice, query_int
from models import Log, LogCreate
from paging import bounded_page_sql
from web import Response, json_response

# meta is read as text and served as it is stored: no document can fail its own read
COLUMNS = "id, level, message, meta::text AS meta, created_at"
LEVELS = ("debug", "info", "warning", "error")


async def list_logs(ctx: Context) -> Response:
    """Newest first; `?level=` filters, `?limit=` (1-200) bounds, `?cursor=` pages."""
    limit = query_int(ctx.request, "limit", 50, 1, 200)
    level = query_choice(ctx.request, "level", LEVELS)
    listing = {"list": "/logs", "level": level}
    before = decode_cursor(ctx.request, listing)
    rows = await ctx.db.query(
        bounded_page_sql(
            COLUMNS,
            "logs WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR level = $2)",
            order="id DESC",
            size="octet_length(meta::text)",
            limit="$3",
        ),
        before,
        level,
        limit + 1,
    )
    return json_response(page(rows, limit, Log, listing))


async def create_log(ctx: Context) -> Response:
    data = parse_body(ctx.request, LogCreate)
    result = await ctx.write(
        sql(
            "INSERT INTO logs (level, message, meta) VALUES ($1, $2, $3::jsonb)"
            f" RETURNING {COLUMNS}",
            data.level,
            data.message,
            data.meta,
        )
    )
    return json_response(Log.model_validate(result.rows[0]), status=201)
