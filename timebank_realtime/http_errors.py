"""One JSON error shape for every HTTP failure: {"error": {"code", "message"[, "path"]}}."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

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
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; the request may be retried")
