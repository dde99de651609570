"""Socket.IO: the only module that imports socketio. Connections, subscribe/unsubscribe, and emits.

Protocol (documented in the README): clients ``subscribe`` with a filter and get an ack with the
subscription id and the current cursor; from then on every matching change with a greater cursor
is pushed as ``chainhook:event`` or ``chainhook:rollback``, in cursor order, once per socket.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import socketio
from aiohttp import web

from .messages import message_for
from .settings import Settings
from .subscriptions import FilterError, SubscriptionRegistry, parse_filter

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS_PER_CONNECTION = 100


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class RealtimeHub:
    def __init__(self, settings: Settings) -> None:
        # None keeps Engine.IO's same-origin default; an empty list would switch origin checks off.
        origins: str | list[str] | None = settings.cors_allowed_origins or None
        if origins == ["*"]:
            origins = "*"
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=origins,
            # Filters are small; a client sending megabytes is misbehaving.
            max_http_buffer_size=64 * 1024,
            ping_interval=settings.socket_ping_interval_seconds,
            ping_timeout=settings.socket_ping_timeout_seconds,
            logger=False,
            engineio_logger=False,
        )
        self.registry = SubscriptionRegistry()
        self.cursor = 0
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("subscribe", self._on_subscribe)
        self.sio.on("unsubscribe", self._on_unsubscribe)
        self._connected: set[str] = set()

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app, socketio_path="socket.io")

    @property
    def connection_count(self) -> int:
        return len(self._connected)

    async def disconnect_all(self) -> None:
        for sid in list(self._connected):
            await self.sio.disconnect(sid)

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], _auth: Any = None) -> None:
        self._connected.add(sid)
        logger.info("socket connected sid=%s remote=%s", sid, environ.get("REMOTE_ADDR"))

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        self._connected.discard(sid)
        dropped = self.registry.drop_socket(sid)
        logger.info("socket disconnected sid=%s subscriptions=%d", sid, dropped)

    async def _on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        try:
            subscription = parse_filter(data)
        except FilterError as error:
            return _error(error.code, error.message)
        if len(self.registry.subscriptions_of(sid)) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
            return _error("too_many_subscriptions",
                          f"a connection holds at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions")
        sub_id = self.registry.add(sid, subscription)
        # Registering and reading the cursor happen without an await in between, so every change
        # after this cursor is matched against the new subscription.
        return {"ok": True, "id": sub_id, "cursor": self.cursor, "filter": subscription.describe()}

    async def _on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        sub_id = data.get("id") if isinstance(data, Mapping) else None
        if not isinstance(sub_id, str):
            return _error("invalid_request", "unsubscribe takes {\"id\": <subscription id>}")
        if not self.registry.remove(sid, sub_id):
            return _error("unknown_subscription", f"this connection has no subscription {sub_id!r}")
        return {"ok": True, "id": sub_id}

    async def publish(self, records: list[dict[str, Any]]) -> None:
        """Emit each change to its audience, in cursor order. Called by the tailer only."""
        for record in records:
            name, message = message_for(record)
            self.cursor = record["cursor"]
            for sid in self.registry.audience(record):
                await self.sio.emit(name, message, to=sid)
