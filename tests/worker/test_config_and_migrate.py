"""The Worker's database settings, and the migrate command over the direct URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.config import ConfigurationError, DatabaseConfig, derive_endpoint
from devstack.postgres import EmbeddedPostgres
from tests.support.services import APP_DATABASE, APP_PASSWORD, APP_USER

ROOT = Path(__file__).resolve().parents[2]


def test_endpoint_is_derived_from_the_host_as_neons_driver_does() -> None:
    assert derive_endpoint("ep-cool-1.us-east-2.aws.neon.tech") == (
        "https://api.us-east-2.aws.neon.tech/sql"
    )
    assert derive_endpoint("localhost") == "https://localhost/sql"
    config = DatabaseConfig.from_env({"DATABASE_URL": "postgresql://u:p@ep-x.eu.neon.tech/db"})
    assert config.endpoint == "https://api.eu.neon.tech/sql" and config.timeout == 10.0


def test_a_vars_endpoint_overrides_the_derived_one_and_the_password_stays_out_of_repr() -> None:
    config = DatabaseConfig.from_env(
        {
            "DATABASE_URL": "postgresql://u:secret@h/db",
            "DATABASE_HTTP_ENDPOINT": "http://127.0.0.1:4444/sql",
            "DATABASE_TIMEOUT_SECONDS": "2.5",
            "DATABASE_API_KEY": "key-0123456789abcdef",
            "LOCAL_DEVELOPMENT": "true",
        }
    )
    assert (config.endpoint, config.timeout) == ("http://127.0.0.1:4444/sql", 2.5)
    assert config.api_key == "key-0123456789abcdef"
    assert "secret" not in repr(config) and "key-0123" not in repr(config)


@pytest.mark.parametrize(
    "endpoint",
    ["https://gw.example.com:4444/sql", "http://gw.example.com:8080/sql", "https://h:80/sql"],
)
def test_a_deployed_worker_refuses_an_endpoint_on_a_custom_port(endpoint: str) -> None:
    env = {"DATABASE_URL": "postgresql://u:p@h/db", "DATABASE_HTTP_ENDPOINT": endpoint}
    with pytest.raises(ConfigurationError, match="ignores custom ports"):
        DatabaseConfig.from_env(env)
    assert DatabaseConfig.from_env({**env, "LOCAL_DEVELOPMENT": "true"}).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://gw.example.com/sql",
        "https://gw.example.com:443/sql",
        "http://gw.example.com:80/sql",
    ],
)
def test_standard_ports_are_fine_anywhere(endpoint: str) -> None:
    env = {"DATABASE_URL": "postgresql://u:p@h/db", "DATABASE_HTTP_ENDPOINT": endpoint}
    assert DatabaseConfig.from_env(env).endpoint == endpoint


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "must be a postgresql://"),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "DATABASE_HTTP_ENDPOINT": "ftp://x"},
            "must be an http",
        ),
        ({"DATABASE_URL": "postgresql://u@h/db", "DATABASE_TIMEOUT_SECONDS": "soon"}, "a number"),
        ({"DATABASE_URL": "postgresql://u@h/db", "DATABASE_TIMEOUT_SECONDS": "0"}, "between"),
    ],
)
def test_bad_settings_are_refused_with_a_message(env: dict[str, str | None], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DatabaseConfig.from_env(env)


def run_migrate(
    env: dict[str, str], cwd: Path = ROOT, *args: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "DIRECT_URL"}
    return subprocess.run(
        [sys.executable, "-m", "devstack.migrate", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
        env={**clean, **env},
    )


def test_migrate_applies_the_schema_twice_without_change_over_the_direct_url(
    postgres: EmbeddedPostgres,
) -> None:
    url = postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE)
    for _ in range(2):
        result = run_migrate({"DIRECT_URL": url})
        assert result.returncode == 0, result.stderr
        assert "schema.sql applied" in result.stdout
    with postgres.admin(APP_DATABASE) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"users", "posts", "logs"} <= tables


def test_migrate_reads_dot_env_and_without_a_direct_url_says_what_to_set(
    tmp_path: Path, postgres: EmbeddedPostgres
) -> None:
    env = {"PYTHONPATH": str(ROOT)}
    result = run_migrate(env, cwd=tmp_path)
    assert result.returncode != 0
    assert "set DIRECT_URL" in result.stderr
    url = postgres.direct_url(APP_USER, APP_PASSWORD, APP_DATABASE)
    (tmp_path / ".env").write_text(f"# local settings\nDIRECT_URL='{url}'\n")
    assert run_migrate(env, cwd=tmp_path).returncode == 0


def test_migrate_applies_a_given_sql_file_whole_and_a_failed_second_run_changes_nothing(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """`--schema`: the Prisma example's migration, which is not idempotent, applies once
    next to schema.sql; run again, it fails as a whole and changes nothing."""
    database = "migrate_given_file"
    with postgres.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database} OWNER {APP_USER}")
    env = {"DIRECT_URL": postgres.direct_url(APP_USER, APP_PASSWORD, database)}
    migrations = ROOT / "examples" / "prisma-accelerate" / "prisma" / "migrations"
    (migration,) = migrations.glob("*/migration.sql")

    assert "schema.sql applied" in run_migrate(env).stdout  # the default is unchanged
    applied = run_migrate(env, ROOT, "--schema", str(migration))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "migrate: migration.sql applied"
    with postgres.admin(database) as conn:
        conn.execute("""INSERT INTO "Log" (level, message, meta) VALUES ('Warn', 'kept', '{}')""")

    again = run_migrate(env, ROOT, "--schema", str(migration))
    assert again.returncode == 1
    assert again.stderr.startswith("migrate: migration.sql: ")
    assert "already exists" in again.stderr
    with postgres.admin(database) as conn:
        assert conn.execute('SELECT level::text, message FROM "Log"').fetchall() == [
            ("Warn", "kept")
        ]
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {"Log", "users", "posts", "logs"} <= {row[0] for row in tables}

    missing = run_migrate(env, ROOT, "--schema", str(tmp_path / "nothing.sql"))
    assert missing.returncode == 1
    assert "nothing.sql is not a file" in missing.stderr
