"""Whether a statement may leave state in its session for the next request to see.

A pooled connection serves many requests. The reset query (`DISCARD ALL`) wipes what a
request left behind, but costs a round trip; most requests are plain reads and writes
that leave nothing. So a connection is reset only after a statement that may have
changed its session, judged from the statement's text, erring towards a reset:

- anything but a plain `SELECT`/`WITH`/`INSERT`/`UPDATE`/`DELETE`/`MERGE`/`VALUES`/
  `TABLE`/`SHOW`/`EXPLAIN` (so `SET`, `RESET`, `PREPARE`, `LISTEN`, `DECLARE`, `DO`,
  `CALL`, `CREATE`, `LOAD`, ... always reset);
- a `SELECT ... INTO` (it creates a table, maybe a temporary one);
- a call of a built-in that changes the session: `set_config`, advisory locks,
  `dblink` (a connection held by the session), `pg_temp` objects;
- sequence state is left behind by every `nextval` (identity and serial columns call it
  implicitly), and only `currval`/`lastval` read it: a request that reads them first
  resets the session's sequence state (`RESET_BEFORE`), so it sees only its own values,
  exactly as on a fresh connection.

What text cannot show: a function of your own that changes the session from its body
(`SET` without `LOCAL`, a temporary table, a session advisory lock). Run the gateway with
`--reset always` if your functions do that.
"""

from __future__ import annotations

import functools
import re

# The first keyword of statements that leave the session as they found it.
_PLAIN = frozenset(
    {"select", "with", "insert", "update", "delete", "merge", "values", "table", "show", "explain"}
)
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")
_SESSION_CHANGING = re.compile(
    r"set_config|pg_advisory_lock|pg_try_advisory_lock|pg_advisory_unlock|dblink|pg_temp", re.I
)
_INTO = re.compile(r"(\w*)\s+into\b", re.I)  # the word before each INTO
_READS_SEQUENCE_STATE = re.compile(r"currval|lastval", re.I)

RESET_BEFORE = "DISCARD SEQUENCES"


def first_keyword(query: str) -> str:
    """The statement's first word, lower-cased, past white space, comments and `(`."""
    rest = query[_LEADING_NOISE.match(query).end() :]  # type: ignore[union-attr]
    word = _FIRST_WORD.match(rest)
    return word.group().lower() if word else ""


@functools.lru_cache(maxsize=4096)  # clients send the same few statements over and over
def may_change_session(query: str) -> bool:
    """True unless the statement surely leaves its session as it found it."""
    if first_keyword(query) not in _PLAIN or _SESSION_CHANGING.search(query):
        return True
    # INSERT INTO and MERGE INTO write rows; any other INTO (SELECT ... INTO) makes a table
    return any(found.group(1).lower() not in ("insert", "merge") for found in _INTO.finditer(query))


@functools.lru_cache(maxsize=4096)
def reads_session_sequences(query: str) -> bool:
    """`currval`/`lastval` answer from the session: they must not see another request's."""
    return _READS_SEQUENCE_STATE.search(query) is not None
