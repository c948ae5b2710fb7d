"""Failed logins, throttled per client address and per user.

After `limit` failed logins within `window` seconds for the same address, or for the
same user, further attempts for it are refused with 429 (Retry-After: until the oldest
failure leaves the window) without reaching Postgres. Only failures count, and a
credential Postgres accepted within the last `trust_for` seconds (--auth-recheck), in
this worker or a sibling, is never refused: a flood of wrong passwords from a tenant's
own address cannot lock its right one out. Accepted credentials are kept as a salted
digest, one per (user, database), compared in constant time. Both tables are bounded:
past `max_keys` entries, the least recently used are forgotten.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from poolgate.core.errors import TooManyLogins

log = logging.getLogger("poolgate.throttle")


class LoginThrottle:
    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        trust_for: float = 60.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.trust_for = trust_for
        self.refused = 0  # attempts refused without reaching Postgres (a metric)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._salt = os.urandom(16)
        self._accepted: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        self.share: Callable[[str, str], Awaitable[None]] | None = None  # see siblings
        self.share_success: Callable[[str, str, str], Awaitable[None]] | None = None

    def _digest(self, user: str, database: str, password: str) -> bytes:
        material = "\x00".join((user, database, password)).encode()
        return hashlib.blake2b(material, key=self._salt).digest()

    def vouches(self, user: str, database: str, password: str) -> bool:
        """Whether Postgres accepted exactly this password for (user, database) within
        the last `trust_for` seconds (here or, as told, in a sibling worker)."""
        found = self._accepted.get((user, database))
        if found is None:
            return False
        digest, when = found
        fresh = self.clock() - when < self.trust_for
        return hmac.compare_digest(digest, self._digest(user, database, password)) and fresh

    async def record_success(
        self, user: str, database: str, password: str, deadline: float | None = None
    ) -> None:
        """A login Postgres accepted: remembered here and, through `share_success`, in
        sibling workers (before the request that logged in is answered, and never past
        its `deadline`, event-loop time)."""
        self.succeeded(user, database, password)
        if self.share_success is not None:
            await _by(deadline, self.share_success(user, database, password))

    def distrust(self, user: str, database: str) -> None:
        """Postgres refused a password it had accepted: nothing is vouched for any more."""
        self._accepted.pop((user, database), None)

    def succeeded(self, user: str, database: str, password: str) -> None:
        key = (user, database)
        self._accepted[key] = (self._digest(user, database, password), self.clock())
        self._accepted.move_to_end(key)
        while len(self._accepted) > self.max_keys:
            self._accepted.popitem(last=False)

    def check(self, address: str, user: str) -> None:
        """Raise TooManyLogins if either key has used up its failures."""
        now = self.clock()
        for key in (f"addr:{address}", f"user:{user}"):
            failures = self._recent(key, now)
            if failures is not None and len(failures) >= self.limit:
                self.refused += 1
                raise TooManyLogins(max(1, math.ceil(failures[0] + self.window - now)))

    async def record_failure(self, address: str, user: str, deadline: float | None = None) -> None:
        """A failed login: counted here and, through `share`, in sibling workers (before
        the request is answered, and never past its `deadline`)."""
        self.failed(address, user)
        if self.share is not None:
            await _by(deadline, self.share(address, user))

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


async def _by(deadline: float | None, telling: Awaitable[None]) -> None:
    """Tell the siblings, best effort, giving up at `deadline` (the request's answer is
    due then): a sibling not told in time counts one login fewer."""
    try:
        async with asyncio.timeout_at(deadline):
            await telling
    except TimeoutError:
        log.warning("siblings not told of a login before the request's deadline")
