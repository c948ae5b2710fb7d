"""A failed workerd start is remembered for an hour, then tried again."""

from __future__ import annotations

import time
from pathlib import Path

from devstack.workerd_memo import REMEMBERED_SECONDS, WorkerdMemo


def test_a_failure_is_remembered_for_an_hour_and_forgotten_by_a_success(tmp_path: Path) -> None:
    memo = WorkerdMemo(tmp_path / "memo.json")
    assert memo.recent_failure() is None
    memo.failed(["error: Request failed after 3 retries"])
    now = time.time()
    said = memo.recent_failure(now + 60)
    assert said is not None and "Request failed after 3 retries" in said
    assert "--runtime workerd" in said
    assert memo.recent_failure(now + REMEMBERED_SECONDS + 1) is None
    memo.forget()
    assert memo.recent_failure() is None


def test_an_unreadable_memo_means_try_again(tmp_path: Path) -> None:
    path = tmp_path / "memo.json"
    path.write_text("{not json")
    assert WorkerdMemo(path).recent_failure() is None
