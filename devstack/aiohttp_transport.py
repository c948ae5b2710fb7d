"""The CPython host's transport to the SQL endpoint: aiohttp's client, one connection
pool for every call. (httpx, which the tests use in-process, costs about 1 ms a call
and its pool serialises under concurrency; the host is what `./dev up` and the
benchmarks serve through.)"""

from __future__ import annotations

import asyncio

import aiohttp

from db.transport import HttpCall, HttpReply, TransportFailure

CONNECT_SECONDS = 5.0  # to open a connection, or wait for a pooled one


class AiohttpTransport:
    def __init__(self, max_connections: int = 100) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def __call__(self, call: HttpCall) -> HttpReply:
        timeout = aiohttp.ClientTimeout(
            total=call.timeout, connect=min(call.timeout, CONNECT_SECONDS)
        )
        try:
            async with self._client().post(
                call.url, data=call.body, headers=dict(call.headers), timeout=timeout
            ) as response:
                body = await response.read()
                return HttpReply(response.status, response.headers, body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            raise TransportFailure("could not connect to the endpoint", sent=False) from None
        except TimeoutError:
            raise TransportFailure(f"no answer within {call.timeout:g} s") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
