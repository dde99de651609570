"""Webhook request bodies: read under a size limit while they stream in, and decoded from their
Content-Encoding here, with a JSON refusal for each way that fails (aiohttp's own decoding, off in
app.py, answers some in text/plain and one with a 500)."""

from __future__ import annotations

import logging
import zlib

from aiohttp import web

from .errors import error_response

logger = logging.getLogger(__name__)

ACCEPTED_ENCODINGS = "gzip, deflate"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_DECODE_SLICE = 64 * 1024


class InvalidEncoding(ValueError):
    """A body that does not decode as its declared Content-Encoding."""


def content_coding(headers: list[str]) -> str | None:
    """The one content coding of the body ("identity" when none), or None when we do not take it:
    unknown codings, br and zstd (optional libraries), and stacked codings ("gzip, gzip")."""
    codings = [c.strip().lower() for header in headers for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return codings[0]
    return None


def decode_body(raw: bytearray, coding: str, max_bytes: int) -> bytearray:
    """``raw`` decoded, never holding more than ``max_bytes`` + 1 decoded bytes (a gzip bomb is a 413).
    The server runs with auto_decompress off (app.py), so every coding is decided here."""
    if coding == "identity":
        return raw
    if coding == "deflate":
        # RFC 9110's deflate is the zlib format; some clients send raw deflate, which aiohttp took too.
        zlib_header = len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        wbits = _GZIP_WBITS
    decompressor = zlib.decompressobj(wbits)
    body = bytearray()
    view = memoryview(raw)
    try:
        for start in range(0, len(raw), _DECODE_SLICE):
            body += decompressor.decompress(view[start:start + _DECODE_SLICE], max_bytes + 1 - len(body))
            if decompressor.unconsumed_tail or len(body) > max_bytes:
                raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(body))
        body += decompressor.flush()
    except zlib.error as error:
        raise InvalidEncoding(f"the body is not valid {coding} data ({error})") from None
    finally:
        view.release()
    if len(body) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(body))
    if not decompressor.eof:
        raise InvalidEncoding(f"the {coding} body is truncated")
    if decompressor.unused_data:
        raise InvalidEncoding(f"data follows the end of the {coding} stream (several gzip members are not taken)")
    return body


async def receive_body(request: web.Request, max_bytes: int) -> bytearray | web.Response:
    """The decoded body, or the response that refuses it."""
    coding = content_coding(request.headers.getall("Content-Encoding", []))
    if coding is None:
        refusal = error_response(415, "unsupported_content_encoding",
                                 f"Content-Encoding must be one of {ACCEPTED_ENCODINGS}, or none")
        refusal.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS  # as RFC 9110 15.5.16 asks
        return refusal
    if request.content_length is not None and request.content_length > max_bytes:
        return error_response(413, "payload_too_large", f"the body exceeds {max_bytes} bytes")
    try:
        body = decode_body(await _read_body(request, max_bytes), coding, max_bytes)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "payload_too_large", f"the body exceeds {max_bytes} bytes")
    except InvalidEncoding as error:
        return error_response(400, "invalid_content_encoding", str(error))
    except ConnectionResetError:
        # The client went away mid-upload: nobody reads this answer, and it is not our failure.
        logger.info("delivery aborted by the client after a partial body remote=%s", request.remote)
        return error_response(400, "bad_request", "the client closed the connection mid-body")
    except web.RequestPayloadError as error:
        cause = type(error.__cause__ or error).__name__
        logger.warning("bad HTTP request from %s: malformed body (%s)", request.remote, cause)
        return error_response(400, "bad_request", "the request body is malformed HTTP")
    return body


async def _read_body(request: web.Request, max_bytes: int) -> bytearray:
    """The body, refused past ``max_bytes`` while it streams in. (Not ``request.read()``, which keeps
    a copy on the request for as long as the request lives.)"""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(body))
    return body
