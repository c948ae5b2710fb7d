"""A Postgres that stops answering altogether (SIGSTOP of the postmaster and every
backend, as a hung host would): the request's deadline answers it, and nothing the
gateway does for the abandoned statement (its cancel request, which a frozen server
never takes) holds that answer back. Against a Postgres of this test's own, so the
freeze touches no other test."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.services import (
    GatewayFactory,
    make_app_url,
    start_postgres,
)
from tests.support.sql import post_sql


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = start_postgres(tmp_path / "pg")
    yield server
    for process in _processes(server):
        process.send_signal(signal.SIGCONT)
    server.stop()


def _processes(server: EmbeddedPostgres) -> list[psutil.Process]:
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def test_a_frozen_server_is_answered_504_at_the_deadline_before_its_cancel_gives_up(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The order of the gateway's log says it: the request's 504 line comes first, the
    cancel request's giving up (a second later) after; a gateway that waited for the
    cancel before answering logs them the other way round."""
    factory = GatewayFactory(own_postgres, tmp_path)
    try:
        gateway = factory("--statement-timeout", "1", "--workers", "1", "--pool-size", "2")
        url = make_app_url()
        assert post_sql(gateway.url, url, {"query": "SELECT 1"}).status_code == 200  # warm
        for process in _processes(own_postgres):
            process.send_signal(signal.SIGSTOP)
        frozen = post_sql(gateway.url, url, {"query": "SELECT 1 /* frozen */"})
        assert frozen.status_code == 504 and "Retry-After" not in frozen.headers
        log = gateway.log_once_it_has("cancellation", seconds=30)
        answered = log.index('"status": 504')
        gave_up = log.index("cancellation")
        assert answered < gave_up, log[-2000:]
    finally:
        factory.stop_all()
