"""Websocket-first Engine.IO connections without a task, a request or a response per connection.

python-engineio keeps each websocket in an aiohttp request handler that never returns, with its
WebSocketResponse and reader, and four asyncio tasks (reader, writer, ping, the handler): most of an
idle connection's memory. Here, once the handshake is answered, the connection's transport is handed
to a small ``asyncio.Protocol`` (aiohttp forgets it): frames are parsed as bytes arrive and written
straight to the transport, and one task for the whole server sends every socket's pings and drops
the sockets that stop answering.

python-socketio sees an Engine.IO socket like any other in ``AsyncServer.sockets`` (``LeanSocket``)
and is driven through the same two entry points python-engineio uses (its ``connect``, ``message``
and ``disconnect`` events), so it needs no change. Polling, and the polling-to-websocket upgrade,
stay on python-engineio.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import engineio
from aiohttp import hdrs, web, web_protocol

from .frames import server_frame
from .frames_in import BINARY, CLOSE, PING, PONG, TEXT, FrameError, FrameReader

logger = logging.getLogger(__name__)

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PING_FRAME = server_frame(b"2")
CLOSE_PACKET_FRAME = server_frame(b"1")
NORMAL_CLOSURE = 1000
# What the handshake and the sweeper read of python-engineio's server (besides ``sockets``).
SERVER_ATTRIBUTES = ("_trigger_event", "generate_id", "_cors_allowed_origins", "ping_interval", "ping_timeout",
                     "max_http_buffer_size", "reason")


# What the hand-over reads and sets of aiohttp's connection protocol.
REQUEST_HANDLER_SLOTS = ("transport", "_message_tail")


def missing_server_internals(eio: engineio.AsyncServer) -> list[str]:
    """What the hand-over needs of python-engineio and aiohttp that this install lacks."""
    missing = [f"engineio.AsyncServer.{name}" for name in SERVER_ATTRIBUTES if not hasattr(eio, name)]
    slots = {name for cls in web_protocol.RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    return missing + [f"aiohttp RequestHandler.{name}" for name in REQUEST_HANDLER_SLOTS if name not in slots]


class LeanSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """The Engine.IO socket python-socketio talks to; its bytes go through ``connection``."""

    def __init__(self, server: engineio.AsyncServer, sid: str, connection: LeanConnection) -> None:
        # Not BaseSocket.__init__: no queue, no writer waits on one.
        self.server, self.sid, self.connection = server, sid, connection
        self.queue = None
        self.last_ping = None
        self.connected = self.upgraded = True
        self.upgrading = self.closing = self.closed = False
        self.session: dict[str, Any] = {}

    async def send(self, pkt: engineio.packet.Packet) -> None:
        if self.closed:
            return
        encoded = pkt.encode()
        if isinstance(encoded, str):
            self.connection.send(server_frame(encoded.encode()), 0)
        else:
            self.connection.send(server_frame(encoded, BINARY), 0)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self.closed or self.closing:
            return
        self.closing = True
        await self.server._trigger_event("disconnect", self.sid, reason or self.server.reason.SERVER_DISCONNECT,
                                         run_async=False)
        if not abort:
            self.connection.send(CLOSE_PACKET_FRAME, 0)
        self.closed = True
        self.server.sockets.pop(self.sid, None)
        flushed = self.connection.finish(abort=abort)
        if wait:
            try:
                await flushed
            except asyncio.CancelledError:
                self.connection.abort()  # gave up waiting for a reader that does not read
                raise

    async def check_ping_timeout(self) -> bool:
        return not self.closed  # the sweeper's job (python-engineio's service task calls this)

    def schedule_ping(self) -> None:
        self.connection.ping_sent = 0.0  # a PONG over polling: cannot happen on a websocket-first socket

    async def handle_get_request(self, environ: Any) -> list[engineio.packet.Packet]:
        return [engineio.packet.Packet(engineio.packet.NOOP)]  # as python-engineio answers an upgraded socket


class LeanConnection(asyncio.Protocol):
    """One websocket connection after its handshake: frames in, frames out, ping state."""

    __slots__ = ("_backlog", "_finishing", "_flushed", "_reader", "next_ping", "owner", "ping_sent", "socket",
                 "transport")

    def __init__(self, owner: LeanWebsockets) -> None:
        self.owner = owner
        self.socket: LeanSocket | None = None
        self.transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        # Frames (with the changes each carries) held back while the connection is backed up.
        self._backlog: collections.deque[tuple[bytes, int]] | None = None
        self._finishing = False  # the close frame goes out once the backlog is written
        self._flushed: asyncio.Future[None] | None = None
        self.ping_sent = 0.0  # monotonic time of the ping not answered yet; 0 when none is
        self.next_ping = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # pause_writing() past the limit; resume_writing() once drained to a quarter of it.
        transport.set_write_buffer_limits(high=self.owner.write_limit)
        self.next_ping = time.monotonic() + self.owner.eio.ping_interval
        self.owner.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            for opcode, payload in self._reader.feed(data, self.owner.eio.max_http_buffer_size):
                self._on_frame(opcode, payload)
        except FrameError as error:
            logger.warning("socket sent a bad websocket frame eio_sid=%s (%s); closing it",
                           self.socket.sid if self.socket else "-", error.reason)
            self._close_frame(error.code)
            self.abort_after_close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.forget(self)
        self._backlog = None
        self._finishing = True
        self._resolve_flushed()
        socket = self.socket
        if socket is not None and not socket.closing:
            reason = socket.server.reason.TRANSPORT_CLOSE if exc is None else socket.server.reason.TRANSPORT_ERROR
            self.owner.spawn(socket.close(wait=False, abort=True, reason=reason))

    def resume_writing(self) -> None:
        self._write_backlog()

    # --- frames in ----------------------------------------------------------------------------------

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise FrameError(1007, "text frame is not UTF-8") from None
            self._on_packet(text)
        elif opcode == BINARY:
            self._on_message(payload)
        elif opcode == PING:
            self._write(server_frame(payload, PONG))
        elif opcode == CLOSE:
            self._close_frame(NORMAL_CLOSURE)
            self.abort_after_close()

    def _on_packet(self, text: str) -> None:
        kind, data = text[:1], text[1:]
        if kind == "4":
            self._on_message(data)
        elif kind == "3":
            self.ping_sent = 0.0
            self.next_ping = time.monotonic() + self.owner.eio.ping_interval
        elif kind == "1" and self.socket is not None:
            self.owner.spawn(self.socket.close(wait=False, abort=True,
                                               reason=self.socket.server.reason.CLIENT_DISCONNECT))
        elif kind not in ("0", "2", "5", "6", "1"):
            # The line python-engineio's log gives (server.py, _EngineLog); "2" (a v3 client's ping),
            # "5" and "6" (upgrade, noop) mean nothing on a websocket-first socket.
            logger.warning("socket sent a frame Engine.IO cannot read (UnknownPacket); ignored it")

    def _on_message(self, data: str | bytes) -> None:
        socket = self.socket
        if socket is not None and not socket.closing:
            # A task per message, as python-engineio's async_handlers=True does: an idle socket has none.
            self.owner.spawn(socket.server._trigger_event("message", socket.sid, data, run_async=False))

    # --- frames out ---------------------------------------------------------------------------------

    def send(self, frame: bytes, weight: int) -> bool:
        """Write ``frame`` now, or after what waits before it; False once the connection is closing."""
        transport = self.transport
        if transport is None or self._finishing or transport.is_closing():
            return False
        # Up to the limit, not past it: past it asyncio has paused us and will call resume_writing.
        if self._backlog is None and transport.get_write_buffer_size() <= self.owner.write_limit:
            transport.write(frame)
            return True
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append((frame, weight))
        return True

    def pending(self) -> int:
        return sum(weight for _, weight in self._backlog) if self._backlog is not None else 0

    def queued_frames(self) -> int:
        return len(self._backlog) if self._backlog is not None else 0

    def _write_backlog(self) -> None:
        transport, backlog = self.transport, self._backlog
        if transport is None or transport.is_closing():
            return
        while backlog and transport.get_write_buffer_size() <= self.owner.write_limit:
            transport.write(backlog.popleft()[0])
        if not backlog:
            self._backlog = None
            if self._finishing:
                self._close_frame(NORMAL_CLOSURE)
                transport.close()
                self._resolve_flushed()

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def _close_frame(self, code: int) -> None:
        self._write(server_frame(code.to_bytes(2, "big"), CLOSE))

    # --- closing ------------------------------------------------------------------------------------

    def finish(self, *, abort: bool) -> asyncio.Future[None]:
        """Close once what was sent is written (at once if ``abort``); resolved when handed over."""
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        if abort:
            self._finishing = True
            self._close_frame(NORMAL_CLOSURE)
            self.abort_after_close()
        elif not self._finishing:
            self._finishing = True
            if self._backlog is None:
                self._close_frame(NORMAL_CLOSURE)
                if self.transport is not None:
                    self.transport.close()
                self._resolve_flushed()
        return self._flushed

    def abort_after_close(self) -> None:
        """Close now: written frames still go out, held ones are dropped."""
        self._backlog = None
        self._finishing = True
        if self.transport is not None:
            self.transport.close()
        self._resolve_flushed()

    def abort(self) -> None:
        self._backlog = None
        if self.transport is not None:
            self.transport.abort()
        self._resolve_flushed()

    def _resolve_flushed(self) -> None:
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)

    # --- pings (called by the sweeper) --------------------------------------------------------------

    def tick(self, now: float, timeout: float) -> None:
        if self.ping_sent:
            if now - self.ping_sent > timeout:
                self._timed_out()
        elif now >= self.next_ping and self.socket is not None:
            self.ping_sent = now
            self.send(PING_FRAME, 0)

    def _timed_out(self) -> None:
        socket = self.socket
        self.owner.forget(self)
        if socket is not None and not socket.closing:
            logger.info("socket eio_sid=%s did not answer a ping in time; closing it", socket.sid)
            # As python-engineio: the CLOSE packet goes out, for a peer that is only slow.
            self.owner.spawn(socket.close(wait=False, abort=False, reason=socket.server.reason.PING_TIMEOUT))
        self.owner.loop_call_later(self.owner.eio.ping_timeout, self.abort)


class LeanWebsockets:
    """The websocket-first connections of one Socket.IO server, and the task that pings them."""

    def __init__(self, eio: engineio.AsyncServer, write_limit: int) -> None:
        self.eio = eio
        self.write_limit = write_limit
        self.connections: set[LeanConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed: asyncio.Event | None = None  # set at shutdown once no connection is left

    def forget(self, connection: LeanConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def accepts(self, request: web.Request) -> bool:
        """A websocket-first Engine.IO v4 connection this code can take (anything else, python-engineio)."""
        query = request.query
        return (request.method == "GET" and request.path.rstrip("/") == "/socket.io"
                and query.get("EIO") == "4" and query.get("transport") == "websocket" and "sid" not in query
                and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
                and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
                and request.headers.get(hdrs.SEC_WEBSOCKET_VERSION) == "13"
                and _valid_key(request.headers.get(hdrs.SEC_WEBSOCKET_KEY, ""))
                and self._origin_allowed(request))

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        if not origin or self.eio.cors_allowed_origins == []:
            return True
        environ = {"HTTP_ORIGIN": origin, "HTTP_HOST": request.host, "wsgi.url_scheme": request.scheme}
        for header, key in ((hdrs.X_FORWARDED_PROTO, "HTTP_X_FORWARDED_PROTO"),
                            (hdrs.X_FORWARDED_HOST, "HTTP_X_FORWARDED_HOST")):
            if header in request.headers:
                environ[key] = request.headers[header]
        allowed = self.eio._cors_allowed_origins(environ)
        return allowed is None or origin in allowed

    async def handle(self, request: web.Request) -> web.StreamResponse:
        eio = self.eio
        connection = LeanConnection(self)
        sid = eio.generate_id()
        socket = connection.socket = LeanSocket(eio, sid, connection)
        eio.sockets[sid] = socket
        # What python-socketio keeps of the request for the socket's life: no headers, no request.
        environ = {"REMOTE_ADDR": request.remote, "QUERY_STRING": request.query_string,
                   "REQUEST_METHOD": "GET", "PATH_INFO": request.path}
        accepted = await eio._trigger_event("connect", sid, environ, run_async=False)
        transport = request.transport
        if (accepted is not None and accepted is not True) or transport is None or transport.is_closing():
            eio.sockets.pop(sid, None)
            if accepted is not None and accepted is not True:
                return web.Response(status=401)
            socket.closing = socket.closed = True
            await eio._trigger_event("disconnect", sid, eio.reason.TRANSPORT_CLOSE, run_async=False)
            return web.Response(status=400)
        self._take_over(request, transport, connection, sid)
        self._start_sweeper()
        return _Released(status=101)

    def _take_over(self, request: web.Request, transport: asyncio.Transport, connection: LeanConnection,
                   sid: str) -> None:
        """Answer the handshake and move the connection from aiohttp's protocol to ours."""
        handler = request.protocol
        tail = bytes(getattr(handler, "_message_tail", b""))  # bytes the client sent after its request
        accept = base64.b64encode(hashlib.sha1(request.headers[hdrs.SEC_WEBSOCKET_KEY].encode()
                                               + WEBSOCKET_GUID).digest())
        handler.transport = None  # so that aiohttp's clean-up below leaves the connection open
        transport.set_protocol(connection)
        connection.connection_made(transport)
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        eio = self.eio
        open_packet = engineio.packet.Packet(engineio.packet.OPEN, {
            "sid": sid, "upgrades": [], "pingTimeout": int(eio.ping_timeout * 1000),
            "pingInterval": int((eio.ping_interval + eio.ping_interval_grace_period) * 1000),
            "maxPayload": eio.max_http_buffer_size})
        transport.write(server_frame(open_packet.encode().encode()))
        # aiohttp releases its parser, request, keep-alive timer and its server's entry for it.
        handler.connection_lost(None)
        if tail:
            connection.data_received(tail)

    # --- the sweeper and the tasks ------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Every socket pinged each ping interval, dropped past the ping timeout without a pong."""
        period = min(1.0, self.eio.ping_interval / 4, self.eio.ping_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now, timeout = time.monotonic(), self.eio.ping_timeout
            for connection in list(self.connections):
                try:
                    connection.tick(now, timeout)
                except Exception:  # one socket's failure must not stop every socket's pings
                    logger.exception("socket ping sweep failed")

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("socket task failed", exc_info=task.exception())

    def loop_call_later(self, delay: float, callback: Any) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    def close(self) -> None:
        """Stop pinging (shutdown); the sockets are disconnected by their owners."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def close_all(self, grace_seconds: float) -> None:
        """End of shutdown, once the sockets were told: close every connection after what it was sent,
        and abort those still open ``grace_seconds`` later (a reader that does not read)."""
        for connection in list(self.connections):
            connection.finish(abort=False)
        self._all_closed = asyncio.Event()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await self._all_closed.wait()
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()
        for task in list(self._tasks):
            task.cancel()


class _Released(web.StreamResponse):
    """What the handler returns for a connection handed over: aiohttp, whose side of it is closed,
    writes nothing."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _valid_key(key: str) -> bool:
    with contextlib.suppress(ValueError):
        return len(base64.b64decode(key, validate=True)) == 16
    return False
