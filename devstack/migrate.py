"""Apply schema.sql over the DIRECT database URL, as command-line tools do.

    uv run python -m devstack.migrate            # DIRECT_URL from the environment or ./.env
    uv run python -m devstack.migrate --url postgresql://...

Never through the Worker or the pooled endpoint: DDL wants a real session, and the
pooled URL is the Worker's alone. The schema is idempotent, so this is safe to re-run.
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


def apply_schema(url: str) -> None:
    """Run schema.sql in one transaction: all of it applies, or none of it."""
    with psycopg.connect(url) as connection, connection.transaction():
        connection.execute(SCHEMA.read_text().encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="migrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="direct postgresql:// URL (default: DIRECT_URL)")
    args = parser.parse_args(argv)
    try:
        apply_schema(direct_url(args.url))
    except psycopg.Error as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {SCHEMA.name} applied")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
