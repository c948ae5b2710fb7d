"""Failed logins, throttled per client address and per user.

After `limit` failed logins within `window` seconds for the same address, or for the
same user, further attempts for it are refused with 429 (Retry-After: until the oldest
failure leaves the window) without reaching Postgres. Only failures count: a tenant's
correct password, once accepted, is never throttled. The table is bounded: past
`max_keys` entries, the least recently failed are forgotten.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from poolgate.errors import TooManyLogins


class LoginThrottle:
    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.refused = 0  # attempts refused without reaching Postgres (a metric)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.share: Callable[[str, str], Awaitable[None]] | None = None  # see siblings

    def check(self, address: str, user: str) -> None:
        """Raise TooManyLogins if either key has used up its failures."""
        now = self.clock()
        for key in (f"addr:{address}", f"user:{user}"):
            failures = self._recent(key, now)
            if failures is not None and len(failures) >= self.limit:
                self.refused += 1
                raise TooManyLogins(max(1, math.ceil(failures[0] + self.window - now)))

    async def record_failure(self, address: str, user: str) -> None:
        """A failed login: counted here and, through `share`, in sibling workers."""
        self.failed(address, user)
        if self.share is not None:
            await self.share(address, user)

    def failed(self, address: str, user: str) -> None:
        now = self.clock()
        for key in (f"addr:{address}", f"user:{user}"):
            failures = self._recent(key, now) or deque()
            failures.append(now)
            self._failures[key] = failures
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures
