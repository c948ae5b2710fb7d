"""A failed start of workerd, remembered for an hour, so that `./dev up` does not spend
its seconds on a download that just failed (workerd's Python runtime downloads Pyodide
and pywrangler a Python build at start-up; offline, both fail). `--runtime workerd`
tries again at once; a start that works forgets the failure."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

REMEMBERED_SECONDS = 3600


class WorkerdMemo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def failed(self, reason: list[str]) -> None:
        self.path.write_text(json.dumps({"at": time.time(), "reason": reason}))

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def recent_failure(self, now: float | None = None) -> str | None:
        """What to say instead of trying workerd, if it failed within the hour."""
        try:
            memo = json.loads(self.path.read_text())
            at, reason = float(memo["at"]), [str(line) for line in memo["reason"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if not 0 <= now - at < REMEMBERED_SECONDS:
            return None
        clock = datetime.fromtimestamp
        why = reason[0] if reason else "no reason given"
        return (
            f"devstack: not trying workerd again before {clock(at + REMEMBERED_SECONDS):%H:%M}:"
            f" its start failed at {clock(at):%H:%M} ({why});"
            " `./dev up --runtime workerd` tries it now"
        )
