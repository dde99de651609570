"""The wire: the only code that knows python-socketio's and python-engineio's internals.

Everything the server sends is encoded once for its whole audience (``frames.encode_message``) and
handed to ``Wire.send``, synchronously: with no await between deciding and queueing, each socket's
order is exactly the order of the calls. python-socketio's ``emit`` would encode per call and start
a task per recipient.

``send`` writes a message straight to a websocket's connection when that cannot overtake anything,
else puts it on the socket's Engine.IO queue, where ``emit`` puts it too. Both read state that
python-engineio does not publish (its sockets, their queue, upgrade and closing flags), so the wire
checks at start-up that it is there. If a release moved it, the wire says so and sends through
python-engineio's public ``send_packet`` instead (``public.py``; docs/architecture.md, "Fan-out").

Websocket-first connections are served by ``websocket.py`` without python-engineio's tasks; ``send``
writes to them (or to their backlog) and ``pending`` counts their backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import engineio
import socketio
from aiohttp import web
from aiohttp.typedefs import Handler

from ...settings import Settings
from .frames import EncodedPacket, Outgoing, PacketRun, encode_message
from .public import Outbox, PublicSender
from .server import build_server, is_socketio_websocket, missing_guard_internals, refuse_websocket_compression
from .websocket import LeanConnection, LeanSocket, LeanWebsockets, missing_server_internals

__all__ = ["EncodedPacket", "Link", "Outgoing", "PacketRun", "Wire", "encode_message", "missing_internals"]

logger = logging.getLogger(__name__)

# A socket whose connection holds this much unsent data gets further messages through its queue, so
# that a slow reader shows up in the queue's length.
DIRECT_WRITE_LIMIT_BYTES = 256 * 1024
# What direct writes and queue lengths read of a python-engineio socket (set in its __init__).
SOCKET_ATTRIBUTES = ("queue", "upgraded", "closing", "closed")
QUEUE_ATTRIBUTES = ("_getters", "_queue")  # asyncio.Queue's waiting readers and its items
SERVER_ATTRIBUTES = ("sockets",)  # python-engineio's sockets by Engine.IO session id


@dataclass(slots=True, eq=False)
class Link:
    """What the wire knows of one Socket.IO connection."""

    sid: str
    eio_sid: str
    # The TCP connection of a websocket-first session, which messages may be written to directly.
    transport: asyncio.Transport | None = None
    # A websocket-first connection served without python-engineio's tasks (``websocket.py``).
    lean: LeanConnection | None = None
    # Public mode only: what waits to be handed to python-engineio (none otherwise: an empty deque
    # is a tenth of an idle connection's memory).
    outbox: Outbox | None = None


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
        self.server = build_server(settings)
        if not callable(getattr(self.server.manager, "eio_sid_from_sid", None)):
            # Every connection needs it, in either mode: refuse to start rather than refuse them all.
            raise RuntimeError(f"python-socketio {version('python-socketio')} has no manager.eio_sid_from_sid; "
                               "install a version pyproject.toml allows")
        self.writes = {"direct": 0, "queued": 0}
        self._links: dict[str, Link] = {}
        self._upgraded_transports: dict[str, asyncio.Transport | None] = {}
        self._public = PublicSender(self.server)
        missing = missing_internals(self.server)
        self.direct = not missing
        if missing:
            logger.warning("python-engineio %s lacks %s: sending through its public send_packet, which is "
                           "slower and has no backpressure (docs/architecture.md, Fan-out)",
                           version("python-engineio"), ", ".join(missing))
        # Websocket-first connections without a task each, when python-engineio has what they use.
        lean_missing = missing_server_internals(self.server.eio)
        self.lean = LeanWebsockets(self.server.eio, DIRECT_WRITE_LIMIT_BYTES) if not missing + lean_missing else None
        if lean_missing:
            logger.warning("%s missing: websockets are served by python-engineio, a task each (about 35 KB "
                           "an idle connection instead of 5)", ", ".join(lean_missing))
        guard_missing = missing_guard_internals(self.server)
        if guard_missing:
            logger.warning("python-socketio %s lacks %s: a malformed packet gets its traceback logged instead "
                           "of closing its socket", version("python-socketio"), ", ".join(guard_missing))

    def attach(self, app: web.Application) -> None:
        self.server.attach(app, socketio_path="socket.io")
        app.middlewares.append(self._lean_websockets)
        app.middlewares.append(refuse_websocket_compression)
        app.middlewares.append(self._note_websocket_upgrades)

    def on(self, event: str, handler: Callable[..., Awaitable[Any]]) -> None:
        self.server.on(event, handler)

    def link(self, sid: str, environ: Mapping[str, Any]) -> Link:
        """The link of a connection being accepted (called from its connect handler)."""
        request = environ.get("aiohttp.request")
        transport = request.transport if request is not None and is_socketio_websocket(request) else None
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/") or ""
        engine_socket = self.server.eio.sockets.get(eio_sid)
        lean = engine_socket.connection if isinstance(engine_socket, LeanSocket) else None
        link = self._links[sid] = Link(sid=sid, eio_sid=eio_sid, transport=transport, lean=lean,
                                       outbox=None if self.direct else Outbox())
        return link

    def unlink(self, link: Link) -> None:
        self._links.pop(link.sid, None)
        link.lean = None
        if link.outbox is not None:
            link.outbox.closed = True
            link.outbox.messages.clear()

    async def disconnect(self, sid: str) -> None:
        link = self._links.get(sid)
        if link is not None and link.outbox is not None:
            # Engine.IO sends what is queued before it closes: let the writer queue the rest first.
            await self._public.flush(link.outbox)
        await self.server.disconnect(sid)

    def close(self) -> None:
        self._public.close()
        if self.lean is not None:
            self.lean.close()

    async def close_connections(self, grace_seconds: float) -> None:
        """Close the websocket-first connections still open (last step of shutdown; python-engineio
        closes its own)."""
        if self.lean is not None:
            await self.lean.close_all(grace_seconds)

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
        if link.outbox is not None:
            if not self._public.send(link.eio_sid, link.outbox, packet):
                return False
            self.writes["queued"] += len(packet.packets)
            return True
        if link.lean is not None:
            return self._send_lean(link.lean, packet)
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

    def _send_lean(self, connection: LeanConnection, packet: Outgoing) -> bool:
        # Written at once unless the connection is backed up; then held, in order, and counted.
        if not connection.send(packet.websocket_frame, sum(one.weight for one in packet.packets)):
            return False
        self.writes["queued" if connection.queued_frames() else "direct"] += len(packet.packets)
        return True

    def pending(self, link: Link) -> int:
        """Changes sent to the connection that it has not taken yet (a batch frame counts its
        changes): a reader that cannot keep up shows here, since direct writes stop once its
        connection backs up."""
        if link.outbox is not None:
            return self._public.pending(link.outbox)
        if link.lean is not None:
            return link.lean.pending()
        engine_socket = self.server.eio.sockets.get(link.eio_sid)
        if engine_socket is None:
            return 0
        return sum(getattr(packet, "weight", 1) for packet in engine_socket.queue._queue)

    # --- the websocket connections ------------------------------------------------------------------

    @web.middleware
    async def _lean_websockets(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.lean is not None and self.lean.accepts(request):
            return await self.lean.handle(request)
        return await handler(request)

    @web.middleware
    async def _note_websocket_upgrades(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Remember the connection of each polling session's websocket upgrade, for direct writes.
        (A websocket-first session's connection is its connect request's; see ``link``.)"""
        eio_sid = request.query.get("sid")
        if eio_sid is None or not is_socketio_websocket(request):
            return await handler(request)
        self._upgraded_transports[eio_sid] = request.transport
        try:
            return await handler(request)
        finally:
            self._upgraded_transports.pop(eio_sid, None)
