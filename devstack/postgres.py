"""An embedded PostgreSQL (the `pgserver` wheel) set up the way a hosted one would be:
a trusted superuser on the unix socket only, and an application role that must log in
with a SCRAM-SHA-256 password."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

# pgserver asks platformdirs for a runtime dir at import; containers often have none,
# and the warning says nothing the user can act on.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

from pgserver.postgres_server import PostgresServer, get_server  # noqa: E402
from psycopg import sql  # noqa: E402


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    server: PostgresServer

    @property
    def socket_dir(self) -> str:
        return str(self.data_dir)

    @property
    def upstream_url(self) -> str:
        """What `poolgate serve --upstream` takes: where the server is, no credentials."""
        return f"postgresql:///?host={quote(self.socket_dir)}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.socket_dir, user="postgres", dbname=database, autocommit=True
        )

    def direct_url(self, user: str, password: str, database: str) -> str:
        """A libpq URL straight to the server, for migrations (never for the Worker)."""
        return (
            f"postgresql://{quote(user)}:{quote(password, safe='')}@/{quote(database)}"
            f"?host={quote(self.socket_dir)}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: open sessions are ended, committed data is kept."""
        self.server.cleanup()
        # pgserver only stops the server when it believes this was the last handle;
        # a stale handle list can leave it running, so make sure from the pid file.
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


def start(data_dir: Path, *, stop_at_exit: bool) -> EmbeddedPostgres:
    """Start (or re-attach to) the server whose data lives in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop" if stop_at_exit else None)
    (data_dir / "pg_hba.conf").write_text(
        "# written by devstack: superuser trusted on the socket, everyone else by password\n"
        "local all postgres trust\n"
        "local all all scram-sha-256\n"
    )
    postgres = EmbeddedPostgres(data_dir=data_dir, server=server)
    with postgres.admin() as conn:
        conn.execute("SELECT pg_reload_conf()")
    return postgres


def ensure_role_and_database(
    postgres: EmbeddedPostgres, user: str, password: str, database: str
) -> None:
    """Create (or update the password of) a login role owning its own database."""
    with postgres.admin() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                verb, sql.Identifier(user), sql.Literal(password)
            )
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(user)
                )
            )
