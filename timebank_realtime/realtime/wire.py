"""The wire: the only code that knows python-socketio's and python-engineio's internals.

Everything the server sends is encoded once for its whole audience (``encode_message``) and handed to
``Wire.send``, synchronously: with no await between deciding and queueing, each socket's order is
exactly the order of the calls. python-socketio's ``emit`` would encode per call and start a task
per recipient.

``send`` writes a message straight to a websocket's connection when that cannot overtake anything,
else puts it on the socket's Engine.IO queue, where ``emit`` puts it too. Both read state that
python-engineio does not publish (its sockets, their queue, upgrade and closing flags), so the wire
checks at start-up that it is there. If a release moved it, the wire says so and sends through
python-engineio's public ``send_packet`` instead: slower, and a slow reader then shows only in the
wire's own outbox (see docs/architecture.md, "Fan-out").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import engineio
import socketio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from .. import jsoncodec
from ..settings import Settings

logger = logging.getLogger(__name__)

# A socket whose connection holds this much unsent data gets further messages through its queue, so
# that a slow reader shows up in the queue's length.
DIRECT_WRITE_LIMIT_BYTES = 256 * 1024
# What direct writes and queue lengths read of a python-engineio socket (set in its __init__).
SOCKET_ATTRIBUTES = ("queue", "upgraded", "closing", "closed")
QUEUE_ATTRIBUTES = ("_getters", "_queue")  # asyncio.Queue's waiting readers and its items
SERVER_ATTRIBUTES = ("sockets",)  # python-engineio's sockets by Engine.IO session id


# --- encoded messages --------------------------------------------------------------------------------


class EncodedPacket(engineio.packet.Packet):  # type: ignore[misc]
    """An Engine.IO message encoded once, however many sockets it is sent to: as text for the
    Engine.IO writer (websocket or polling) and as a whole websocket frame for direct writes."""

    def __init__(self, event: str, message: bytes, weight: int = 1) -> None:
        super().__init__(engineio.packet.MESSAGE)
        self.event = event
        self.weight = weight  # how many changes it carries, for the slow-consumer limit
        self._message = message  # the Engine.IO packet: b"4" + the Socket.IO packet
        self._text: str | None = None
        self._frame: bytes | None = None

    @property
    def packets(self) -> tuple[EncodedPacket]:
        return (self,)

    def encode(self, b64: bool = False) -> str:
        if self._text is None:
            self._text = self._message.decode()
        return self._text

    @property
    def websocket_frame(self) -> bytes:
        """The server-to-client websocket text frame (RFC 6455 5.2: final, unmasked, and
        uncompressed, since compression is declined)."""
        if self._frame is None:
            size = len(self._message)
            if size < 126:
                header = bytes((0x81, size))
            elif size < 1 << 16:
                header = bytes((0x81, 126)) + size.to_bytes(2, "big")
            else:
                header = bytes((0x81, 127)) + size.to_bytes(8, "big")
            self._frame = header + self._message
        return self._frame


class PacketRun:
    """Several messages for the same sockets, in order: one write of all their frames to a
    connection, or one queue entry each."""

    def __init__(self, packets: list[EncodedPacket]) -> None:
        self.packets = packets
        self._frames: bytes | None = None

    @property
    def websocket_frame(self) -> bytes:
        if self._frames is None:
            self._frames = b"".join(packet.websocket_frame for packet in self.packets)
        return self._frames


Outgoing = EncodedPacket | PacketRun


def encode_message(name: str, payload: Mapping[str, Any], *, weight: int = 1) -> EncodedPacket:
    """A Socket.IO EVENT on the default namespace ("2" + JSON array, Socket.IO protocol v5) inside an
    Engine.IO MESSAGE ("4"). Our payloads are plain JSON with no binary parts, which spares the
    walk python-socketio makes through every value looking for bytes."""
    return EncodedPacket(name, b"42" + jsoncodec.dumps_bytes([name, payload]), weight)


# --- connections -------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Link:
    """What the wire knows of one Socket.IO connection."""

    eio_sid: str
    # The TCP connection of a websocket-first session, which messages may be written to directly.
    transport: asyncio.Transport | None = None
    # Public mode only: messages not yet handed to python-engineio, and whether a writer is on them.
    outbox: collections.deque[EncodedPacket] = field(default_factory=collections.deque)
    writing: bool = False
    closed: bool = False


def missing_internals(server: socketio.AsyncServer) -> list[str]:
    """The library state direct writes and queue lengths need that this python-engineio lacks."""
    missing = [f"AsyncServer.{name}" for name in SERVER_ATTRIBUTES if not hasattr(server.eio, name)]
    probe = engineio.async_socket.AsyncSocket(server.eio, "start-up-check")
    missing += [f"AsyncSocket.{name}" for name in SOCKET_ATTRIBUTES if not hasattr(probe, name)]
    queue = getattr(probe, "queue", None)
    missing += [f"AsyncSocket.queue.{name}" for name in QUEUE_ATTRIBUTES if not hasattr(queue, name)]
    return missing


class Wire:
    """Sends encoded messages to Socket.IO connections and tells how much each has not taken yet."""

    def __init__(self, settings: Settings) -> None:
        # None keeps Engine.IO's same-origin default; an empty list would switch origin checks off.
        origins: str | list[str] | None = settings.cors_allowed_origins or None
        if origins == ["*"]:
            origins = "*"
        self.server = _GuardedServer(
            async_mode="aiohttp",
            serializer=_BoundedJsonPacket,
            cors_allowed_origins=origins,
            max_http_buffer_size=settings.max_socket_message_bytes,
            ping_interval=settings.socket_ping_interval_seconds,
            ping_timeout=settings.socket_ping_timeout_seconds,
            logger=False,
            engineio_logger=_EngineLog(logging.getLogger("engineio.server"), {}),
        )
        self.writes = {"direct": 0, "queued": 0}
        self._upgraded_transports: dict[str, asyncio.Transport | None] = {}
        missing = missing_internals(self.server)
        self.direct = not missing
        if missing:
            logger.warning("python-engineio %s lacks %s: sending through its public send_packet; slower, "
                           "and slow readers are seen only by what waits for it", version("python-engineio"),
                           ", ".join(missing))

    def attach(self, app: web.Application) -> None:
        self.server.attach(app, socketio_path="socket.io")
        app.middlewares.append(_refuse_websocket_compression)
        app.middlewares.append(self._note_websocket_upgrades)

    def on(self, event: str, handler: Callable[..., Awaitable[Any]]) -> None:
        self.server.on(event, handler)

    def link(self, sid: str, environ: Mapping[str, Any]) -> Link:
        """The link of a connection being accepted (called from its connect handler)."""
        request = environ.get("aiohttp.request")
        transport = request.transport if request is not None and _is_socketio_websocket(request) else None
        return Link(eio_sid=self.server.manager.eio_sid_from_sid(sid, "/") or "", transport=transport)

    def unlink(self, link: Link) -> None:
        link.closed = True
        link.outbox.clear()

    async def disconnect(self, sid: str) -> None:
        await self.server.disconnect(sid)

    @staticmethod
    def refusal(code: str, message: str) -> Exception:
        """What a connect handler raises to refuse: the client's connect_error carries message
        "<code>: <text>" and data {code, message}."""
        refusal: Exception = socketio.exceptions.ConnectionRefusedError(
            f"{code}: {message}", {"code": code, "message": message})
        return refusal

    # --- sending -------------------------------------------------------------------------------------

    def send(self, link: Link, packet: Outgoing) -> bool:
        """Send an encoded message (or a run of them); False if the connection is gone."""
        if not self.direct:
            return self._send_public(link, packet)
        engine_socket = self.server.eio.sockets.get(link.eio_sid)
        if engine_socket is None or engine_socket.closed:
            return False
        # Straight is safe when the socket is on websocket, nothing is queued, the writer is waiting
        # for the queue (so everything before was handed to the connection, in order) and the
        # connection is not backed up. It saves a task wake-up and a frame encoding per recipient.
        transport = link.transport or self._upgraded_transports.get(link.eio_sid)
        queue = engine_socket.queue
        if (transport is not None and engine_socket.upgraded and not engine_socket.closing and queue.empty()
                and queue._getters and not transport.is_closing()
                and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT_BYTES):
            transport.write(packet.websocket_frame)
            self.writes["direct"] += len(packet.packets)
        else:
            for one in packet.packets:
                queue.put_nowait(one)
            self.writes["queued"] += len(packet.packets)
        return True

    def pending(self, link: Link) -> int:
        """Changes sent to the connection that it has not taken yet (a batch frame counts its
        changes): a reader that cannot keep up shows here, since direct writes stop once its
        connection backs up."""
        waiting = sum(packet.weight for packet in link.outbox)
        if not self.direct:
            return waiting
        engine_socket = self.server.eio.sockets.get(link.eio_sid)
        if engine_socket is None:
            return waiting
        return waiting + sum(getattr(packet, "weight", 1) for packet in engine_socket.queue._queue)

    def _send_public(self, link: Link, packet: Outgoing) -> bool:
        if link.closed:
            return False
        link.outbox.extend(packet.packets)
        self.writes["queued"] += len(packet.packets)
        if not link.writing:
            link.writing = True
            asyncio.get_running_loop().create_task(self._write_outbox(link))
        return True

    async def _write_outbox(self, link: Link) -> None:
        """Hand a link's messages to python-engineio in order, one writer per link."""
        try:
            while link.outbox and not link.closed:
                await self.server.eio.send_packet(link.eio_sid, link.outbox.popleft())
        finally:
            link.writing = False

    # --- the websocket connections ------------------------------------------------------------------

    @web.middleware
    async def _note_websocket_upgrades(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Remember the connection of each polling session's websocket upgrade, for direct writes.
        (A websocket-first session's connection is its connect request's; see ``link``.)"""
        eio_sid = request.query.get("sid")
        if eio_sid is None or not _is_socketio_websocket(request):
            return await handler(request)
        self._upgraded_transports[eio_sid] = request.transport
        try:
            return await handler(request)
        finally:
            self._upgraded_transports.pop(eio_sid, None)


@web.middleware
async def _refuse_websocket_compression(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decline permessage-deflate on Socket.IO websockets, as Node's socket.io does by default.

    Browsers offer it and aiohttp would accept it: every frame would then be compressed once per
    recipient, with a compressor per connection (CPU per message and about 4x the memory per socket).
    """
    if request.path.startswith("/socket.io") and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
        headers = request.headers.copy()
        del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
        request = request.clone(headers=headers)
    return await handler(request)


def _is_socketio_websocket(request: web.Request) -> bool:
    return request.path.startswith("/socket.io") and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


# --- what python-socketio reads and logs ---------------------------------------------------------------


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
