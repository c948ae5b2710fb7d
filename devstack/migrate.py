"""Apply schema.sql (or another SQL file) over the DIRECT database URL, as command-line
tools do.

    uv run python -m devstack.migrate            # DIRECT_URL from the environment or ./.env
    uv run python -m devstack.migrate --url postgresql://...
    uv run python -m devstack.migrate --schema prisma/migrations/…/migration.sql

Never through the Worker or the pooled endpoint: DDL wants a real session, and the
pooled URL is the Worker's alone. schema.sql is idempotent, so this is safe to re-run; a
file given with --schema is applied as it is, in one transaction, so one that is not
idempotent (a Prisma migration) fails as a whole the second time and changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema.sql"


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped, surrounding quotes dropped."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def direct_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("DIRECT_URL") or read_dotenv(Path(".env")).get("DIRECT_URL")
    if not url:
        raise SystemExit("migrate: set DIRECT_URL (environment or .env) or pass --url")
    return url


def apply_schema(url: str, schema: Path = SCHEMA) -> None:
    """Run `schema` in one transaction: all of it applies, or none of it."""
    with psycopg.connect(url) as connection, connection.transaction():
        connection.execute(schema.read_text().encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="migrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="direct postgresql:// URL (default: DIRECT_URL)")
    parser.add_argument(
        "--schema", type=Path, default=SCHEMA, help="the SQL file to apply (default: schema.sql)"
    )
    args = parser.parse_args(argv)
    if not args.schema.is_file():
        print(f"migrate: {args.schema} is not a file", file=sys.stderr)
        return 1
    try:
        apply_schema(direct_url(args.url), args.schema)
    except psycopg.Error as exc:
        print(f"migrate: {args.schema.name}: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {args.schema.name} applied")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
