"""``POST /api/webhooks/chainhook``: authenticate, parse, normalize, store. Never emits: the tailer does."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
import zlib

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from .chainhook.normalize import parse_delivery
from .chainhook.streaming import NeedsWholeParse, stream_rows
from .errors import DatabaseUnavailable, PayloadError
from .events import DeliveryHeader
from .http_errors import error_response
from .metrics import Metrics
from .store.deliveries import DeliveryResult, DeliveryWriter

logger = logging.getLogger(__name__)

SECRET_HEADER = "x-chainhook-consumer-secret"


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _presented_secrets(request: web.Request) -> list[str]:
    presented = []
    authorization = request.headers.get("Authorization")
    if authorization:
        presented.append(authorization)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            presented.append(token.strip())
    header_secret = request.headers.get(SECRET_HEADER)
    if header_secret:
        presented.append(header_secret)
    return presented


def is_authorized(request: web.Request, secret: SecretStr | None) -> bool:
    if secret is None:
        return is_loopback(request.remote)
    expected = secret.get_secret_value().encode()
    matched = False
    for candidate in _presented_secrets(request):
        # Compare every candidate, always: timing says nothing about which one was close.
        matched |= hmac.compare_digest(_header_bytes(candidate), expected)
    return matched


def _header_bytes(value: str) -> bytes:
    """A header value as bytes. aiohttp decodes header bytes that are not UTF-8 to lone surrogates,
    which plain ``encode()`` refuses; "surrogatepass" encodes any str, and what it yields for a
    surrogate is never valid UTF-8, so it can never equal a configured secret."""
    return value.encode("utf-8", "surrogatepass")


def make_webhook_handler(writer_key: web.AppKey[DeliveryWriter], draining_key: web.AppKey[asyncio.Event],
                         secret: SecretStr | None, max_bytes: int, stream_bytes: int, metrics: Metrics) -> Handler:
    """``stream_bytes``: bodies larger than this are stored while they are parsed (chainhook/streaming.py)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response, source_format = await _deliver(request, started)
        except Exception:
            # There should be none; if there is, Chainhook retries and the metrics show it.
            logger.exception("delivery failed: unexpected error")
            response, source_format = error_response(
                500, "internal_error", "the server failed; nothing was stored, the delivery may be retried"), "unknown"
        metrics.deliveries.labels(format=source_format, status=str(response.status)).inc()
        metrics.delivery_seconds.observe(time.perf_counter() - started)
        return response

    async def _deliver(request: web.Request, started: float) -> tuple[web.Response, str]:
        if request.app[draining_key].is_set():
            return error_response(503, "shutting_down", "this node is shutting down; retry, another node "
                                  "behind the load balancer will take the delivery"), "unknown"
        if not is_authorized(request, secret):
            reason = "a valid webhook secret" if secret else "a loopback client (no secret is configured)"
            return error_response(401, "unauthorized", f"this endpoint needs {reason}"), "unknown"
        body = await _receive(request, max_bytes)
        if isinstance(body, web.Response):
            return body, "unknown"
        try:
            delivery, result, streamed = await _store(request.app[writer_key], body, stream_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return error_response(400, "invalid_json", f"the body is not JSON: {error}"), "unknown"
        except PayloadError as error:
            return error_response(422, "invalid_payload", error.message, path=error.path), "unknown"
        except DatabaseUnavailable as error:
            logger.warning("delivery refused: database unavailable (%s)", error)
            return error_response(503, "database_unavailable",
                                  "the event store is unreachable; nothing was stored, retry later"), "unknown"
        assert delivery.format is not None  # known once the delivery is stored
        _count(metrics, result)
        logger.info(
            "delivery format=%s chainhook=%s apply_blocks=%d rollback_blocks=%d tip=%s rows=%d "
            "applied=%d duplicates=%d rolled_back=%d restored=%d skipped=%d cursor=%s streamed=%s "
            "duration_ms=%.1f",
            delivery.format, delivery.chainhook_uuid or "-", delivery.apply_blocks,
            len(delivery.rollback_block_hashes), delivery.tip_height, delivery.rows + delivery.repeats,
            result.applied, result.duplicates, result.rolled_back, result.restored,
            delivery.skipped_events, result.last_cursor, streamed, (time.perf_counter() - started) * 1000,
        )
        return web.json_response({
            "applied": result.applied,
            "duplicates": result.duplicates,
            "rolled_back": result.rolled_back,
            "restored": result.restored,
            "cursor": result.last_cursor,
        }), delivery.format

    return handle


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


async def _receive(request: web.Request, max_bytes: int) -> bytearray | web.Response:
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


async def _store(writer: DeliveryWriter, body: bytearray,
                 stream_bytes: int) -> tuple[DeliveryHeader, DeliveryResult, bool]:
    """Store the delivery: streamed when large and of the common shape, else parsed whole. Returns
    what the delivery was, what was stored, and whether it streamed."""
    if len(body) > stream_bytes:
        streamed = DeliveryHeader()
        result = await _store_streamed(writer, body, streamed)
        if result is not None:
            return streamed, result, True
    delivery = parse_delivery(body)
    return delivery, await writer.apply_delivery(delivery), False


async def _store_streamed(writer: DeliveryWriter, body: bytearray, delivery: DeliveryHeader) -> DeliveryResult | None:
    """Store a large delivery while parsing it (see chainhook/streaming.py), filling in ``delivery``.
    None when it has to be parsed whole instead: a shape that cannot stream, or rows stored before
    (repeats, restores)."""
    try:
        result = await writer.append_stream(stream_rows(body, delivery), delivery)
    except NeedsWholeParse as reason:
        logger.info("delivery parsed whole: %s", reason)
        return None
    if result is None:
        logger.info("delivery parsed whole: some of its rows were stored before")
    return result


def _count(metrics: Metrics, result: DeliveryResult) -> None:
    metrics.changes.labels(change="apply").inc(result.applied)
    metrics.changes.labels(change="rollback").inc(result.rolled_back)
    metrics.changes.labels(change="restore").inc(result.restored)
    metrics.duplicates.inc(result.duplicates)
