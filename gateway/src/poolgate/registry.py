"""Where the replicas of one gateway find each other: entries in the Redis they share.

Every worker of a replica started with `--advertise-url` keeps
`poolgate:replica:<name>:<worker>` -> its replica's URL in Redis: set at start, renewed
every HEARTBEAT seconds with an expiry of EXPIRY, deleted when it stops once its
transactions have ended (see serving); a replica that dies drops out by the expiry.
Redis not answering is logged once per outage and tried again at the next renewal; a
look-up it does not answer is `Unavailable` (503).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from poolgate.core.errors import Unavailable

log = logging.getLogger("poolgate.registry")

HEARTBEAT = 1.0  # seconds between renewals of a worker's entry
EXPIRY = 5.0  # seconds an entry outlives its last renewal (a replica that died)
REGISTRY_TIMEOUT = 1.0  # seconds Redis may take to answer


def _key(replica: str, worker: int) -> str:
    return f"poolgate:replica:{replica}:{worker}"


class Registry:
    """This worker's entry in Redis, renewed while it runs, and the look-up of others'."""

    def __init__(self, redis_url: str, replica: str, worker: int, url: str) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        self._redis: Any = redis.from_url(
            redis_url, socket_timeout=REGISTRY_TIMEOUT, socket_connect_timeout=REGISTRY_TIMEOUT
        )
        self.key = _key(replica, worker)
        self.url = url
        self._renewing: asyncio.Task[None] | None = None
        self._registered = False

    async def start(self) -> None:
        """Registered (or said why not in the log: renewals go on trying)."""
        await self._renew()
        self._renewing = asyncio.create_task(self._renew_forever())

    async def _renew(self) -> None:
        try:
            await self._redis.set(self.key, self.url, px=int(EXPIRY * 1000))
        except self._errors as exc:
            if self._registered or self._renewing is None:  # said once per outage
                log.warning(
                    '{"event": "replica_unregistered", "reason": %s}', json.dumps(repr(exc))
                )
            self._registered = False
            return
        if not self._registered:
            log.info('{"event": "replica_registered", "key": "%s"}', self.key)
        self._registered = True

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self._renew()

    async def url_of(self, replica: str, worker: int) -> str | None:
        """The URL of a registered worker, None if it is not (stopped, or died)."""
        try:
            value = await self._redis.get(_key(replica, worker))
        except self._errors as exc:
            raise Unavailable(
                f"the replicas' registry (Redis) did not answer: the replica holding the"
                f" transaction cannot be found ({type(exc).__name__})"
            ) from None
        return bytes(value).decode() if value is not None else None

    async def deregister(self) -> None:
        """No longer renewed, and deleted (best effort: else it expires); once."""
        if self._renewing is None:
            return  # never started, or done already
        self._renewing.cancel()
        self._renewing = None
        try:
            await self._redis.delete(self.key)
        except self._errors as exc:
            log.warning(
                '{"event": "replica_not_deregistered", "reason": %s}', json.dumps(repr(exc))
            )

    async def close(self) -> None:
        await self._redis.aclose()
