"""`poolgate serve` refuses invalid settings at start-up, saying what is expected."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
from poolgate.config import ConfigError, parse_upstream

from devstack.postgres import EmbeddedPostgres
from tests.support.services import free_port, run_serve


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--upstream is required"),
        (("--upstream", "mysql://h"), "--upstream must be a postgresql:// URL"),
        (("--upstream", "postgresql://u:p@h:5432"), "must not name a user"),
        (("--upstream", "postgresql://h/db"), "must not name a dbname"),
        (("--upstream", "postgresql://h", "--pool-size", "0"), "--pool-size must be at least 1"),
        (
            ("--upstream", "postgresql://h", "--pool-size", "ten"),
            "--pool-size must be a whole number",
        ),
        (("--upstream", "postgresql://h", "--listen", "4444"), "--listen must be host:port"),
        (("--upstream", "postgresql://h", "--listen", "h:70000"), "port must be from 0 to 65535"),
        (
            ("--upstream", "postgresql://h", "--statement-timeout", "-1"),
            "positive number of seconds",
        ),
        (("--upstream", "postgresql://h", "--acquire-timeout", "soon"), "number of seconds"),
        (("--upstream", "postgresql://h", "--max-response-bytes", "0"), "at least 1"),
        (("--upstream", "postgresql://h", "--bogus", "1"), "unrecognized arguments"),
    ],
)
def test_invalid_setting_stops_start_up_with_a_message_naming_it(
    args: tuple[str, ...], message: str
) -> None:
    result = run_serve(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("poolgate: invalid configuration:")
    assert message in result.stderr


def test_environment_variables_configure_what_options_do_not(postgres: EmbeddedPostgres) -> None:
    refused = run_serve(env={"POOLGATE_UPSTREAM": "postgresql://h", "POOLGATE_POOL_SIZE": "-3"})
    assert refused.returncode == 2 and "--pool-size must be at least 1" in refused.stderr
    port = free_port()
    env = {
        **os.environ,
        "POOLGATE_UPSTREAM": postgres.upstream_url,
        "POOLGATE_LISTEN": f"127.0.0.1:{port}",
        "POOLGATE_DRAIN_SECONDS": "0",  # this test's SIGTERM means stop now
    }
    with subprocess.Popen(
        [sys.executable, "-m", "poolgate.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            listening = next(line for line in process.stdout if '"listening"' in line)
            assert f'"url": "http://127.0.0.1:{port}"' in listening
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


def test_help_lists_every_option_with_its_environment_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poolgate.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0
    for variable in (
        "POOLGATE_UPSTREAM",
        "POOLGATE_LISTEN",
        "POOLGATE_POOL_SIZE",
        "POOLGATE_STATEMENT_TIMEOUT",
        "POOLGATE_MAX_REQUEST_BYTES",
    ):
        assert variable in result.stdout


@pytest.mark.parametrize(
    "upstream",
    ["postgresql://u@h", "postgresql://h/db", "postgresql://:pw@h", "postgresql://h?user=u"],
)
def test_an_upstream_naming_credentials_is_refused_before_the_port_is_looked_at(
    upstream: str,
) -> None:
    """With --workers the supervisor checks the port itself, without libpq: credentials
    in --upstream are still the error reported, even when the port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(
            "--upstream", upstream, "--listen", f"127.0.0.1:{port}", "--workers", "2"
        )
    assert result.returncode == 2
    assert "--upstream must not name a" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--pool-size", "\uff15"), ("--acquire-timeout", "\u0663"), ("--workers", "\u00b2")],
)
def test_a_setting_in_non_ascii_digits_stops_start_up(option: str, value: str) -> None:
    from poolgate.config import ConfigError, parse_settings

    with pytest.raises(ConfigError, match=option):
        parse_settings(["--upstream", "postgresql://h:5432", option, value], environ={})


@pytest.mark.parametrize(
    ("url", "keywords"),
    [
        ("postgresql://db.internal:6543", {"host": "db.internal", "port": "6543"}),
        ("postgres://10.0.0.7", {"host": "10.0.0.7"}),
        ("postgresql://[::1]:5433", {"host": "::1", "port": "5433"}),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql", {"host": "/var/run/postgresql"}),
        ("postgresql:///?host=/tmp/pg&port=5999", {"host": "/tmp/pg", "port": "5999"}),
        (
            "postgresql://h?sslmode=verify-full&sslrootcert=system",
            {"host": "h", "sslmode": "verify-full", "sslrootcert": "system"},
        ),
        ("postgresql://", {"host": "localhost"}),
    ],
)
def test_an_upstream_url_gives_the_keywords_the_driver_reads(
    url: str, keywords: dict[str, str]
) -> None:
    assert parse_upstream(url) == keywords


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://a,b:5432", "several hosts"),
        ("postgresql:///?host=a,b", "several hosts"),
        ("postgresql://h?application_name=x", "'application_name' is not supported"),
        ("postgresql://h?sslmode=sometimes", "sslmode must be one of"),
        ("postgresql://h:http", "port must be a whole number"),
        ("postgresql://h?password=x", "must not name a password"),
    ],
)
def test_an_upstream_the_driver_cannot_honour_is_refused_at_start(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_upstream(url)
