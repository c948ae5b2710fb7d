"""The single seam between the database client and the network.

A transport takes one `HttpCall` and returns one `HttpReply`, or raises
`TransportFailure` when no reply came (refused, reset, timed out). Inside Workers it is
the runtime's `fetch` (see the adapter module); on CPython, `HttpxTransport`; in a test,
any async function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class HttpCall:
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float  # seconds for the whole exchange


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportFailure(Exception):
    """Raised by a transport when no HTTP reply arrived; `reason` says why.

    `sent` is False only when the request surely never reached the endpoint (it could
    not connect); after that, or when a transport cannot tell, the endpoint may have
    acted on it."""

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class Transport(Protocol):
    async def __call__(self, call: HttpCall) -> HttpReply: ...


class HttpxTransport:
    """CPython transport: one `httpx.AsyncClient` for every call (connections reused)."""

    def __init__(self, client: Any | None = None) -> None:
        import httpx  # only on CPython; the Workers bundle uses the fetch transport

        self._httpx = httpx
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )

    async def __call__(self, call: HttpCall) -> HttpReply:
        try:
            response = await self._client.post(
                call.url, content=call.body, headers=dict(call.headers), timeout=call.timeout
            )
        except (self._httpx.ConnectError, self._httpx.ConnectTimeout, self._httpx.PoolTimeout):
            raise TransportFailure("could not connect to the endpoint", sent=False) from None
        except self._httpx.TimeoutException:
            raise TransportFailure(f"no answer within {call.timeout:g} s") from None
        except self._httpx.TransportError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}") from None
        return HttpReply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()
