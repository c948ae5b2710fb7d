"""wrk's Lua scripts for the benchmarks: `POST /sql` of one lookup by a random id."""

from __future__ import annotations

_SQL_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Neon-Connection-String"] = os.getenv("BENCH_CONNECTION_STRING")
wrk.headers["Neon-Raw-Text-Output"] = "true"
wrk.headers["Neon-Array-Mode"] = "true"
if os.getenv("BENCH_CACHE_TTL") then
  wrk.headers["Poolgate-Cache-TTL"] = os.getenv("BENCH_CACHE_TTL")
end
request = function()
  return wrk.format(nil, "/sql", nil,
    '{"query":"QUERY","params":[' .. math.random(1, ROWS) .. ']}')
end
"""


def sql_script(query: str, rows: int) -> str:
    """`query` (one `$1`) with an id from 1 to `rows`; the connection string comes from
    BENCH_CONNECTION_STRING, a cache TTL from BENCH_CACHE_TTL when set."""
    return _SQL_SCRIPT.replace("QUERY", query).replace("ROWS", str(rows))
