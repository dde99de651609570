"""``POST /api/webhooks/chainhook``: authenticate, parse, normalize, store. Never emits: the tailer does.

Statuses and error codes: docs/http-api.md#the-webhook."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Mapping

from aiohttp import web
from pydantic import SecretStr

from ..chainhook.normalize import parse_delivery
from ..chainhook.streaming import NeedsWholeParse, stream_rows
from ..collector import collector_paused
from ..errors import DatabaseUnavailable
from ..events import DeliveryHeader
from ..keys import DRAINING, METRICS, SETTINGS, WRITER
from ..metrics import Metrics
from ..settings import Settings
from ..store.deliveries import DeliveryResult, DeliveryWriter
from .bodies import receive_body
from .errors import InvalidBody, answer_for, error_response, internal_error

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


async def receive_delivery(request: web.Request) -> web.StreamResponse:
    """Answer a delivery, count it by format and status, and time it."""
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        response, source_format = await _deliver(request, started)
    except Exception as error:
        response, source_format = _refusal(error), "unknown"
    metrics.deliveries.labels(format=source_format, status=str(response.status)).inc()
    metrics.delivery_seconds.observe(time.perf_counter() - started)
    return response


def _refusal(error: Exception) -> web.Response:
    if isinstance(error, DatabaseUnavailable):
        logger.warning("delivery refused: database unavailable (%s)", error)
    answer = answer_for(error)
    if answer is not None:
        return answer
    # There should be none; if there is, Chainhook retries and the metrics show it.
    logger.exception("delivery failed: unexpected error", exc_info=error)
    return internal_error("the server failed; nothing was stored, the delivery may be retried")


async def _deliver(request: web.Request, started: float) -> tuple[web.Response, str]:
    settings = request.app[SETTINGS]
    if request.app[DRAINING].is_set():
        return error_response(503, "shutting_down", "this node is shutting down; retry, another node "
                              "behind the load balancer will take the delivery"), "unknown"
    secret = settings.chainhook_webhook_secret
    if not is_authorized(request, secret):
        reason = "a valid webhook secret" if secret else "a loopback client (no secret is configured)"
        return error_response(401, "unauthorized", f"this endpoint needs {reason}"), "unknown"
    body = await receive_body(request, settings.max_payload_bytes)
    if isinstance(body, web.Response):
        return body, "unknown"
    try:
        delivery, result, streamed = await _store(request.app[WRITER], body, settings)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidBody("invalid_json", f"the body is not JSON: {error}") from None
    assert delivery.format is not None  # known once the delivery is stored
    _count(request.app[METRICS], result)
    # Fields, not a formatted message: JSON logs get each as a key of its own (logs.py).
    logger.info("delivery", extra=_delivery_fields(delivery, result, streamed, time.perf_counter() - started))
    return web.json_response({
        "applied": result.applied,
        "duplicates": result.duplicates,
        "rolled_back": result.rolled_back,
        "restored": result.restored,
        "cursor": result.last_cursor,
    }), delivery.format


def _delivery_fields(delivery: DeliveryHeader, result: DeliveryResult, streamed: bool,
                     seconds: float) -> dict[str, object]:
    """The delivery log line's fields (docs/http-api.md#the-delivery-log-line)."""
    return {
        "format": delivery.format, "chainhook_uuid": delivery.chainhook_uuid or None, "network": delivery.network,
        "apply_blocks": delivery.apply_blocks, "rollback_blocks": len(delivery.rollback_block_hashes),
        "tip_height": delivery.tip_height, "rows": delivery.rows + delivery.repeats,
        "applied": result.applied, "duplicates": result.duplicates, "rolled_back": result.rolled_back,
        "restored": result.restored, "block_changes": result.block_changes, "skipped_events": delivery.skipped_events,
        "cursor": result.last_cursor,
        "streamed": streamed, "duration_ms": round(seconds * 1000, 1),
    }


async def _store(writer: DeliveryWriter, body: bytearray,
                 settings: Settings) -> tuple[DeliveryHeader, DeliveryResult, bool]:
    """Store the delivery: streamed when large and of the common shape, else parsed whole. Returns
    what the delivery was, what was stored, and whether it streamed."""
    if len(body) > settings.stream_delivery_bytes:
        streamed = DeliveryHeader()
        result = await _store_streamed(writer, body, streamed, settings.chainhook_networks)
        if result is not None:
            return streamed, result, True
    with collector_paused():
        delivery = parse_delivery(body, settings.chainhook_networks)
    return delivery, await writer.apply_delivery(delivery), False


async def _store_streamed(writer: DeliveryWriter, body: bytearray, delivery: DeliveryHeader,
                          networks: Mapping[str, str]) -> DeliveryResult | None:
    """Store a large delivery while parsing it (see chainhook/streaming.py), filling in ``delivery``.
    None when it has to be parsed whole instead: a shape that cannot stream, or rows stored before
    (repeats, restores)."""
    try:
        result = await writer.append_stream(stream_rows(body, delivery, networks), delivery)
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
