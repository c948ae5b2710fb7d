"""The other replicas of one gateway (separate hosts behind a load balancer), found in
Redis and reached over HTTP(S).

With `--advertise-url URL` and `--cache redis://...` (the Redis every replica shares):

- every worker of a replica is in the registry (see registry) while it runs, under its
  replica's name, new at every start: a restarted replica is never taken for the one
  before it;
- an interactive transaction's id names the worker and the replica holding it:
  `<worker>.<replica>.<192 random bits>`;
- a call on a transaction (poolgate's own, or Prisma Accelerate's: its face names the
  replica in its ids too) that reaches another replica is forwarded to the holder's
  URL, one hop: the request as the client sent it (the holder checks its credentials
  and key; TLS applies as to any client), on a connection of its own, and the answer
  is relayed unchanged. A client that hangs up closes that connection, which cancels the
  call at the holder (as between workers, see siblings);
- a holder that is not registered, cannot be connected to, or hangs up without answering
  (it stopped or died: its server connection went with it, so Postgres rolled the
  transaction back) is answered as an expired transaction (410), except a COMMIT that
  was sent: whether it committed is unknown (504). A holder that does not answer by the
  request's deadline: 504. Redis not answering the look-up: 503.
- a call is forwarded once at most (`Poolgate-Forwarded`): one that arrives forwarded
  and names another replica came to an address that now serves a new replica (the
  holder is gone): 410.

Without `--advertise-url` none of this runs: ids name a worker only, and a call that
the load balancer sends to another gateway finds no such transaction there (404).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter

from poolgate.config import Settings
from poolgate.core.errors import (
    GatewayError,
    OutcomeUnknown,
    TransactionExpired,
)
from poolgate.faces.neon_http.app import (
    REQUEST_LOG,
    answer_error,
    continue_if_expected,
    new_request_id,
    outcome_name,
)
from poolgate.registry import Registry

log = logging.getLogger("poolgate.replicas")

FORWARDED_HEADER = "Poolgate-Forwarded"
TRANSACTION_HEADER = "Poolgate-Transaction"  # the HTTP face's (PROTOCOL.md)
_ID = re.compile(r"([0-9]{1,3})\.([0-9a-f]{12})\.[A-Za-z0-9_-]+")
# not passed on in either direction: they describe one connection, not the call
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "host",
        "expect",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    }
)
_NOT_RELAYED = _HOP_BY_HOP | {"date", "server"}  # this server writes its own

Handle = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
FailureAnswer = Callable[[web.BaseRequest, GatewayError], Awaitable[web.StreamResponse | None]]


def new_name() -> str:
    """A replica's name: 48 random bits, new at every start."""
    return secrets.token_hex(6)


def holder_of(request: web.BaseRequest) -> tuple[str, int] | None:
    """(replica, worker) holding the transaction a call is on; None for anything else
    (a `POST /transaction` that opens one, other paths, an id without a replica)."""
    if request.method != "POST":
        return None
    if request.path == "/sql":
        transaction_id = request.headers.get(TRANSACTION_HEADER, "")
    elif request.path.startswith("/transaction/"):
        transaction_id = request.path.split("/")[2]
    else:
        return None
    match = _ID.fullmatch(transaction_id)
    return (match[2], int(match[1])) if match else None


class Replicas:
    """In front of the gateway's handler `inner`: calls on another replica's transactions
    are forwarded to it, everything else is `inner`'s."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        worker: int,
        inner: Handle,
        metrics: CollectorRegistry | None = None,
        answer_failure: FailureAnswer | None = None,
    ) -> None:
        """`metrics`: the gateway's, to count the calls forwarded from here in;
        `answer_failure`: a face's own answer to a hop that failed, for a call of its
        (None: answered here, as the HTTP face answers)."""
        assert settings.advertise_url is not None
        self.name = name
        self._settings = settings
        self._inner = inner
        self.registry = Registry(settings.cache, name, worker, settings.advertise_url)
        self._session: aiohttp.ClientSession | None = None
        self._answer_failure = answer_failure
        self._forwarded = Counter(
            "poolgate_forwarded_calls",
            "Calls on another replica's interactive transaction, by outcome (forwarded:"
            " the holder answered; else why it could not)",
            ["outcome"],
            registry=metrics,
        )

    async def start(self) -> None:
        # the hop is verified as any client's: the system's CAs (SSL_CERT_FILE names others);
        # a connection per call, as between workers: one never waits behind another, and
        # a kept one the holder closes meanwhile is never mistaken for the holder gone
        connector = aiohttp.TCPConnector(
            force_close=True, limit=0, ssl=ssl.create_default_context()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # relayed as it came
            timeout=aiohttp.ClientTimeout(total=None, connect=self._settings.connect_timeout),
        )
        await self.registry.start()

    async def deregister(self) -> None:
        """Out of the registry: this worker's transactions have ended (see serving); calls
        still in flight are forwarded on until `close`."""
        await self.registry.deregister()

    async def close(self) -> None:
        await self.registry.deregister()  # if it was not already
        if self._session is not None:
            await self._session.close()
        await self.registry.close()
        REQUEST_LOG.flush()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        holder = holder_of(request)
        if holder is None or holder[0] == self.name:
            return await self._inner(request)
        request_id = new_request_id()
        started = time.perf_counter()
        outcome = "forwarded"
        try:
            # the holder checks the credentials and the key (an API key, or an
            # Accelerate key for Accelerate's transactions)
            await continue_if_expected(request)
            body: bytes | AsyncIterator[bytes] = (
                request.content.read_nowait() if request.content.is_eof() else _chunks(request)
            )
            response: web.StreamResponse = await self.forward(request, body, *holder)
            # the holder's: one id for the call in both logs
            request_id = response.headers.get("Neon-Request-Id", request_id)
        except asyncio.CancelledError:
            self._record(request, request_id, 499, started, "client_closed")
            self._forwarded.labels("client_closed").inc()
            raise
        except GatewayError as error:
            outcome = outcome_name(error)
            answered = await self._answer_failure(request, error) if self._answer_failure else None
            response = answered if answered is not None else answer_error(error)
            response.headers["Neon-Request-Id"] = request_id
            response.headers.setdefault("Access-Control-Allow-Origin", "*")
        self._record(request, request_id, response.status, started, outcome)
        self._forwarded.labels(outcome).inc()
        return response

    async def forward(
        self,
        request: web.BaseRequest,
        body: bytes | AsyncIterator[bytes],
        replica: str,
        worker: int,
    ) -> web.Response:
        """`request` (with `body`) answered by worker `worker` of `replica`, which holds
        the transaction it is on; failures raised as the `GatewayError` they stand for
        (see the module's docstring). Also the Accelerate face's way to a savepoint in
        another replica's transaction."""
        assert self._session is not None
        if FORWARDED_HEADER in request.headers:
            raise TransactionExpired()  # the holder's address serves a new replica now
        deadline = asyncio.get_running_loop().time() + self._settings.request_deadline
        url = await self.registry.url_of(replica, worker)
        if url is None:
            raise TransactionExpired()  # it stopped (deregistered) or died (expired)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append((FORWARDED_HEADER, self.name))
        try:
            async with asyncio.timeout_at(deadline):
                async with self._session.post(
                    url + request.path_qs, data=body, headers=headers, allow_redirects=False
                ) as reply:
                    content = await reply.read()
                    status, relayed = reply.status, reply.headers
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # never reached it, so nothing was done there (a TLS failure is said in the log)
            log.info('{"event": "replica_unreachable", "reason": %s}', json.dumps(repr(exc)))
            raise TransactionExpired() from None
        except TimeoutError:
            raise OutcomeUnknown(
                "the replica holding the transaction did not answer in time: whether the call"
                " took effect is unknown"
            ) from None
        except (aiohttp.ClientError, OSError):
            # it hung up (stopped, died): its server connection went with it
            if request.path.endswith("/commit"):
                raise OutcomeUnknown(
                    "the replica holding the transaction went away during COMMIT: whether it"
                    " committed is unknown"
                ) from None
            raise TransactionExpired() from None
        headers_out = CIMultiDict(
            (k, v) for k, v in relayed.items() if k.lower() not in _NOT_RELAYED
        )
        return web.Response(status=status, body=content, headers=headers_out)

    def _record(
        self,
        request: web.BaseRequest,
        request_id: str,
        status: int,
        started: float,
        outcome: str,
    ) -> None:
        duration = round((time.perf_counter() - started) * 1000, 3)
        REQUEST_LOG.request(
            request_id, request.method, request.path, status, outcome, duration, None, None
        )


async def _chunks(request: web.BaseRequest) -> AsyncIterator[bytes]:
    """The body as it arrives (the holder applies the size and time limits)."""
    async for chunk in request.content.iter_any():
        yield chunk
