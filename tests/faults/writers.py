"""Write load through the Worker, as a careful client sends it: every logical write has
its own Idempotency-Key and is retried on 503/504 until it is acknowledged.

The writes are log entries (`POST /logs`): nothing in the schema stops the same entry
from being stored twice, so a retry that was not idempotent shows as a duplicate (posts
would soon meet the five-drafts rule instead)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.worker.conftest import WorkerClient


@dataclass
class WriteLoad:
    acknowledged: list[str] = field(default_factory=list)  # messages answered 201
    given_up: list[str] = field(default_factory=list)
    failures: dict[int, int] = field(default_factory=dict)  # status -> count
    slowest_failure: float = 0.0  # seconds
    successes_at: list[float] = field(default_factory=list)  # monotonic times
    unexpected: list[str] = field(default_factory=list)

    def record_failure(self, status: int, seconds: float, body: bytes) -> None:
        self.failures[status] = self.failures.get(status, 0) + 1
        self.slowest_failure = max(self.slowest_failure, seconds)
        if status not in (503, 504):
            self.unexpected.append(f"{status}: {body[:200]!r}")

    def first_success_after(self, moment: float) -> float | None:
        later = [at for at in self.successes_at if at >= moment]
        return min(later) - moment if later else None


async def write_entries(
    worker: WorkerClient,
    name: str,
    count: int,
    load: WriteLoad,
    attempts: int = 200,
    pause: float = 0.05,
) -> None:
    for n in range(count):
        title = f"{name}-{n}"
        body = {"level": "info", "message": title}
        for _ in range(attempts):
            reply = await worker.post("/logs", body, headers={"idempotency-key": title})
            if reply.status == 201:
                load.acknowledged.append(title)
                load.successes_at.append(time.monotonic())
                break
            load.record_failure(reply.status, reply.seconds, reply.body)
            await asyncio.sleep(pause)
        else:
            load.given_up.append(title)
