"""The Socket.IO server as this service runs it: integers in client packets bounded, a malformed
packet closing its socket with one warning, python-engineio's log at warnings only, websocket
compression declined."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from typing import Any

import socketio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ...settings import Settings

logger = logging.getLogger(__name__)

# What the malformed-packet guard reads of python-socketio (a method it overrides, a dict it clears).
GUARD_ATTRIBUTES = ("_handle_eio_message", "_binary_packet")


def build_server(settings: Settings) -> socketio.AsyncServer:
    # None keeps Engine.IO's same-origin default; an empty list would switch origin checks off.
    origins: str | list[str] | None = settings.cors_allowed_origins or None
    if origins == ["*"]:
        origins = "*"
    server: socketio.AsyncServer = _GuardedServer(
        async_mode="aiohttp",
        serializer=_BoundedJsonPacket,
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.max_socket_message_bytes,
        ping_interval=settings.socket_ping_interval_seconds,
        ping_timeout=settings.socket_ping_timeout_seconds,
        logger=False,
        engineio_logger=_EngineLog(logging.getLogger("engineio.server"), {}),
    )
    return server


def missing_guard_internals(server: socketio.AsyncServer) -> list[str]:
    return [f"AsyncServer.{name}" for name in GUARD_ATTRIBUTES if not hasattr(server, name)]


@web.middleware
async def refuse_websocket_compression(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decline permessage-deflate on Socket.IO websockets, as Node's socket.io does by default.

    Browsers offer it and aiohttp would accept it: every frame would then be compressed once per
    recipient, with a compressor per connection (CPU per message and about 4x the memory per socket).
    """
    if request.path.startswith("/socket.io") and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
        headers = request.headers.copy()
        del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
        request = request.clone(headers=headers)
    return await handler(request)


def is_socketio_websocket(request: web.Request) -> bool:
    return request.path.startswith("/socket.io") and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _bounded_int(digits: str) -> int | float:
    # A cursor fits in 64 bits. Longer integers read as infinity, which validation refuses like any
    # other non-integer; python-engineio's own reader raises instead, and the packet and its ack are lost.
    return int(digits) if len(digits) <= 20 else math.inf


class _BoundedJson:
    """The JSON of Socket.IO packets: the standard library's, with integers bounded as above."""

    @staticmethod
    def loads(text: str | bytes, **options: Any) -> Any:
        return json.loads(text, **{**options, "parse_int": _bounded_int})

    dumps = staticmethod(json.dumps)


class _BoundedJsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    json = _BoundedJson


class _GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """A client that sends what is not a Socket.IO packet (a stray binary frame, a packet type a
    server never receives, an attachment nobody announced) is closed with one warning, as Node's
    socket.io does, instead of an ERROR traceback per frame."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            with contextlib.suppress(AttributeError):
                self._binary_packet.pop(eio_sid, None)  # a half-read attachment of this socket
            logger.warning("socket sent a malformed packet eio_sid=%s (%s); closing it", eio_sid,
                           type(error).__name__)
            await self.eio.disconnect(eio_sid)


class _EngineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """python-engineio's log, warnings and errors only (it logs every packet at INFO). A frame it
    cannot read gets an "Unknown receive error" traceback at ERROR, and is ignored: a client's fault,
    for which one warning line is enough."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if msg == "Unknown receive error":
            self.warning("socket sent a frame Engine.IO cannot read (%s); ignored it",
                         type(sys.exc_info()[1]).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
