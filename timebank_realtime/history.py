"""The history API: GET /api/events, /api/events/{id}, /api/transactions/{tx_hash}, /api/status."""

from __future__ import annotations

from aiohttp import web

from .errors import DatabaseUnavailable
from .http_errors import error_response
from .queries import ParamError, parse_event_query, parse_integer
from .realtime.hub import RealtimeHub
from .realtime.messages import stored_event
from .realtime.subscriptions import FilterError, validate_value
from .store.reads import HistoryReader


def _unavailable() -> web.Response:
    return error_response(503, "database_unavailable", "the event store is unreachable; retry later")


def _bad_param(param: str, message: str) -> web.Response:
    return error_response(400, "invalid_parameter", message, param=param)


class HistoryHandlers:
    def __init__(self, reader_key: web.AppKey[HistoryReader], hub_key: web.AppKey[RealtimeHub]) -> None:
        self._reader_key = reader_key
        self._hub_key = hub_key

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/events", self.events),
            web.get("/api/events/{id}", self.event),
            web.get("/api/transactions/{tx_hash}", self.transaction),
            web.get("/api/status", self.status),
        ]

    async def events(self, request: web.Request) -> web.Response:
        params = {name: request.query.getall(name) for name in request.query}
        try:
            query = parse_event_query(params)
        except ParamError as error:
            return _bad_param(error.param, error.message)
        try:
            rows = await request.app[self._reader_key].events_page(query)
        except DatabaseUnavailable:
            return _unavailable()
        page = rows[: query.limit]
        # `next` is where the following page starts (feed it to `after`, or `before` when descending).
        more = len(rows) > query.limit
        return web.json_response({"events": [stored_event(r) for r in page],
                                  "next": page[-1]["cursor"] if more else None})

    async def event(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        try:
            event_id = parse_integer("id", raw)
        except ParamError as error:
            return _bad_param("id", f"{raw!r} is not an event id: {error.message}")
        try:
            row = await request.app[self._reader_key].event_by_id(event_id)
        except DatabaseUnavailable:
            return _unavailable()
        if row is None:
            return error_response(404, "not_found", f"no event {raw}")
        return web.json_response(stored_event(row))

    async def transaction(self, request: web.Request) -> web.Response:
        try:
            tx_hash = validate_value("tx_hash", request.match_info["tx_hash"])
        except FilterError as error:
            return _bad_param("tx_hash", error.message)
        try:
            rows = await request.app[self._reader_key].transaction_events(tx_hash)
        except DatabaseUnavailable:
            return _unavailable()
        if not rows:
            return error_response(404, "not_found", f"no events for transaction {tx_hash}")
        return web.json_response({"tx_hash": tx_hash, "events": [stored_event(r) for r in rows]})

    async def status(self, request: web.Request) -> web.Response:
        hub = request.app[self._hub_key]
        try:
            stored = await request.app[self._reader_key].status()
        except DatabaseUnavailable:
            return _unavailable()
        # Newest delivery first.
        chainhooks = [{**c, "last_delivery_at": c["last_delivery_at"].isoformat()} for c in stored["chainhooks"]]
        latest = chainhooks[0] if chainhooks else None
        return web.json_response({
            "cursor": stored["cursor"],
            "events_stored": stored["events"],
            "events_rolled_back": stored["rolled_back"],
            "chain_tip": {"block_height": hub.tip.get("block_height"), "block_hash": hub.tip.get("block_hash")},
            "last_delivery": {"at": latest["last_delivery_at"], "format": latest["source_format"]} if latest else None,
            "chainhooks": chainhooks,
            "sockets": hub.connection_count,
            "subscriptions": hub.registry.subscription_count,
        })
