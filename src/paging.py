"""Keyset pages that can never outgrow the database endpoint's response limit.

A page holds at most `limit` rows and, past its first row, at most `PAGE_BYTES` of its
large column (post bodies, log metadata): rows beyond that wait for the next page,
which `next_cursor` reaches as usual. Without the byte bound, 100 posts of 100,000
four-byte characters would be a 40 MB answer, which the endpoint refuses (507).
"""

from __future__ import annotations

PAGE_BYTES = 1024 * 1024


def output_names(select: str) -> str:
    """`id, meta::text AS meta` -> `id, meta`: the names a select list produces."""
    return ", ".join(item.rsplit(" AS ", 1)[-1].strip() for item in select.split(","))


def bounded_page_sql(select: str, source: str, *, order: str, size: str, limit: str) -> str:
    """Rows of `SELECT {select} FROM {source} ORDER BY {order} LIMIT {limit}` up to the
    byte bound, each with `fetched`: how many rows the LIMIT let through (more than
    were returned means the byte bound cut the page short)."""
    return (
        f"WITH page AS (SELECT {select}, {size} AS size_bytes,"
        f" sum({size}) OVER (ORDER BY {order}) AS running"
        f" FROM {source} ORDER BY {order} LIMIT {limit})"
        f" SELECT {output_names(select)}, (SELECT count(*) FROM page) AS fetched FROM page"
        f" WHERE running - size_bytes < {PAGE_BYTES} ORDER BY {order}"
    )
