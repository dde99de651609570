"""The history API: GET /api/events, /api/events/{id}, /api/transactions/{tx_hash}, /api/status
(docs/http-api.md#history-api). Bad parameters raise ``ParamError`` and an unreachable database
``DatabaseUnavailable``; errors.py answers both."""

from __future__ import annotations

from aiohttp import web

from ..events import network_tips, stored_event
from ..keys import HISTORY, HUB, TAILER
from ..realtime.subscriptions import FilterError, validate_value
from .errors import error_response
from .queries import ParamError, parse_event_query, parse_integer


async def events(request: web.Request) -> web.Response:
    query = parse_event_query({name: request.query.getall(name) for name in request.query})
    rows = await request.app[HISTORY].events_page(query)
    page = rows[: query.limit]
    # `next` is where the following page starts (feed it to `after`, or `before` when descending).
    more = len(rows) > query.limit
    return web.json_response({"events": [stored_event(r) for r in page],
                              "next": page[-1]["cursor"] if more else None})


async def event(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    try:
        event_id = parse_integer("id", raw)
    except ParamError as error:
        raise ParamError("id", f"{raw!r} is not an event id: {error.message}") from None
    row = await request.app[HISTORY].event_by_id(event_id)
    if row is None:
        return error_response(404, "not_found", f"no event {raw}")
    return web.json_response(stored_event(row))


async def transaction(request: web.Request) -> web.Response:
    try:
        tx_hash = validate_value("tx_hash", request.match_info["tx_hash"])
    except FilterError as error:
        raise ParamError("tx_hash", error.message) from None
    rows = await request.app[HISTORY].transaction_events(tx_hash)
    if not rows:
        return error_response(404, "not_found", f"no events for transaction {tx_hash}")
    return web.json_response({"tx_hash": tx_hash, "events": [stored_event(r) for r in rows]})


async def status(request: web.Request) -> web.Response:
    stored = await request.app[HISTORY].status()
    tip, hub = request.app[TAILER].pushed.tip, request.app[HUB]
    # Newest delivery first.
    chainhooks = [{**c, "last_delivery_at": c["last_delivery_at"].isoformat()} for c in stored["chainhooks"]]
    latest = chainhooks[0] if chainhooks else None
    return web.json_response({
        "cursor": stored["cursor"],
        "events_stored": stored["events"],
        "events_rolled_back": stored["rolled_back"],
        "chain_tip": {"block_height": tip.get("block_height"), "block_hash": tip.get("block_hash")},
        "chain_tips": network_tips(tip),
        "last_delivery": {"at": latest["last_delivery_at"], "format": latest["source_format"]} if latest else None,
        "chainhooks": chainhooks,
        "sockets": hub.connection_count,
        "subscriptions": hub.registry.subscription_count,
    })
