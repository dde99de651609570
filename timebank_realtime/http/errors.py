"""One JSON error shape for every HTTP failure, {"error": {"code", "message"[, "path" | "param"]}}, and
the one place where errors become statuses: the domain errors handlers raise (``answer_for``), what
escapes a handler (``json_errors``), and what aiohttp answers by itself, below the application
(``AppRunner``).

A request aiohttp's HTTP parser refuses (a header line over 8190 bytes, a bad Content-Length, a NUL
in a header, an invalid method, URL or version, broken chunked framing) never reaches the application
or its middlewares: ``RequestHandler.handle_error`` (aiohttp/web_protocol.py) answers it, in
text/plain, with the parser's message, which quotes the request bytes, and logs it at ERROR with a
traceback whose message holds the offending line (a secret header included). The same method answers
a handler exception that escapes every middleware. This module is the one place that reaches into
aiohttp's server internals: ``handle_error`` is overridden in a ``RequestHandler`` subclass, and an
``AppRunner`` subclass makes its server build connections with it (``web.Server`` constructs
``RequestHandler`` directly, with no hook). The CLI serves through it.
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions, web
from aiohttp.typedefs import Handler

from ..errors import CodedError, DatabaseUnavailable, PayloadError
from .queries import ParamError

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, **details: str) -> web.Response:
    """``details`` name what was wrong, e.g. ``path`` (a JSON path) or ``param`` (a query parameter)."""
    return web.json_response({"error": {"code": code, "message": message, **details}}, status=status)


class InvalidBody(CodedError):
    """A request body that is not what the endpoint takes (not JSON, a coding that does not decode)."""


def answer_for(error: Exception) -> web.Response | None:
    """The answer to a domain error a handler raised; None for anything else (a bug)."""
    if isinstance(error, DatabaseUnavailable):
        return error_response(503, "database_unavailable", "the event store is unreachable; nothing was "
                              "changed, retry later")
    if isinstance(error, ParamError):
        return error_response(400, "invalid_parameter", error.message, param=error.param)
    if isinstance(error, PayloadError):
        return error_response(422, "invalid_payload", error.message, path=error.path)
    if isinstance(error, InvalidBody):
        return error_response(400, error.code, error.message)
    return None


def internal_error(message: str = "the server failed; the request may be retried") -> web.Response:
    return error_response(500, "internal_error", message)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = error_response(error.status, _CODES.get(error.status, f"http_{error.status}"), error.reason)
        if "Allow" in error.headers:  # a 405 names the methods the resource takes (RFC 9110 15.5.6)
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except Exception as error:
        answer = answer_for(error)
        if answer is not None:
            return answer
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return internal_error()


# What went wrong, by parser exception, in words that quote nothing of the request.
_PROBLEMS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is too long"),
    (http_exceptions.BadHttpMethod, "the request method is invalid"),
    (http_exceptions.BadStatusLine, "the request line is invalid"),
    (http_exceptions.InvalidURLError, "the request target is invalid"),
    (http_exceptions.InvalidHeader, "a header is invalid"),
    (http_exceptions.ContentLengthError, "the body does not match its Content-Length"),
    (http_exceptions.TransferEncodingError, "the chunked body framing is invalid"),
    (http_exceptions.PayloadEncodingError, "the body framing or encoding is invalid"),
)


def _problem(exc: BaseException | None) -> str:
    for kind, text in _PROBLEMS:
        if isinstance(exc, kind):
            return text
    return "the request is not valid HTTP/1.1"


class JsonErrorRequestHandler(web.RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response is under way, the connection is lost
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if status >= 500:
            if exc is not None:
                logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
            else:
                logger.warning("request timed out: %s %s", request.method, request.path)
            code, text = ("internal_error", "the server failed; the request may be retried") if status == 500 \
                else (f"http_{status}", "the server did not answer in time; the request may be retried")
        else:
            problem = _problem(exc)
            # Scanners and TLS clients on the plain port are routine: INFO, as aiohttp's own DEBUG.
            level = logging.INFO if isinstance(exc, http_exceptions.BadHttpMethod) else logging.WARNING
            logger.log(level, "bad HTTP request from %s: %s (%s)", request.remote, problem,
                       type(exc).__name__ if exc is not None else "-")
            code, text = ("bad_request" if status == 400 else f"http_{status}"), problem
        response = error_response(status, code, text)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors as JSON (see the module doc)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(server.request_handler, request_factory=server.request_factory,
                       handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)
