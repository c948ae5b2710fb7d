"""aiohttp's HTTP server, answering what its parser refuses as JSON too.

aiohttp answers a request it cannot parse (a header that is not latin-1 text, a bad
Content-Length, a line over the limit, bytes that are not HTTP) with a `text/plain`
400 of its own, before any handler runs. Here such a request gets a response the
caller builds, so an API that promises JSON for every answer keeps the promise.

    runner = JsonErrorAppRunner(app, answer_parse_error=lambda exc: web.json_response(...))

Used by the gateway and by the Worker's CPython host (devstack), each with its own
error body. The connection is closed after such an answer, as aiohttp does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions, web, web_protocol

ParseErrorAnswer = Callable[[BaseException | None], web.Response]


def parse_failure(exc: BaseException | None) -> str:
    """What was wrong with the request, in words that never repeat any of its bytes
    (aiohttp's own messages quote the offending line: a header's value, a password)."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "the request line or a header is too long"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "a header is malformed"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "the request line is not HTTP/1.1"
    if isinstance(exc, http_exceptions.PayloadEncodingError):
        return "the body's framing (Content-Length or chunked encoding) is malformed"
    return "the request is malformed"


class _Handler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        server = self._manager
        if status != 400 or not isinstance(server, JsonErrorServer):
            return super().handle_error(request, status, exc, message)
        self.log_debug("unparsable request: %s", type(exc).__name__)
        response = server.answer_parse_error(exc)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """A low-level server whose parse failures are answered by `answer_parse_error`."""

    def __init__(
        self, handler: Any, *, answer_parse_error: ParseErrorAnswer, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.answer_parse_error = answer_parse_error

    def __call__(self) -> web_protocol.RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """`web.AppRunner` serving the application through a `JsonErrorServer`."""

    def __init__(
        self, app: web.Application, *, answer_parse_error: ParseErrorAnswer, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._answer_parse_error = answer_parse_error

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return JsonErrorServer(
            plain.request_handler,
            answer_parse_error=self._answer_parse_error,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )
