"""Websocket-first connections served without python-engineio's tasks (realtime/wire/websocket.py),
on a real port, with real clients and raw bytes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import socketio
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB
from timebank_realtime.realtime.wire import encode_message, websocket
from timebank_realtime.realtime.wire.websocket import LeanSocket

from .conftest import Serve, url_of

PING_INTERVAL, PING_TIMEOUT = 0.5, 0.5


def masked_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True, length: int | None = None) -> bytes:
    """A client-to-server frame; ``length`` overrides what the header announces."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A websocket client written byte by byte, to split and break frames at will."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: TestServer) -> RawSocket:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    @classmethod
    @asynccontextmanager
    async def session(cls, server: TestServer, *, join: bool = True) -> AsyncIterator[RawSocket]:
        """Open, with Engine.IO's handshake read and (``join``) Socket.IO's namespace joined; closed after."""
        raw = await cls.open(server)
        try:
            assert (await raw.text()).startswith("0")
            if join:
                raw.writer.write(masked_frame(b"40"))
                assert (await raw.text()).startswith("40")
            yield raw
        finally:
            raw.close()

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (-1, b"") at end of stream."""
        async with asyncio.timeout(10):
            try:
                first, second = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(size)

    async def text(self, skip: tuple[str, ...] = ("2",)) -> str:
        """The next text frame that is not an Engine.IO ping (nor starts with any of ``skip``)."""
        while True:
            opcode, payload = await self.frame()
            assert opcode == 0x1, (opcode, payload)
            if not payload.decode().startswith(skip):
                return payload.decode()

    async def close_code(self) -> int:
        """Read to the server's close frame; its status code."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")
            assert opcode != -1, "closed without a close frame"

    def close(self) -> None:
        self.writer.close()


async def test_a_websocket_first_client_is_served_without_engineio_tasks(server: TestServer) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url_of(server), transports=["websocket"], wait_timeout=5)
    try:
        hub = server.app[HUB]
        sockets = list(hub.wire.server.eio.sockets.values())
        assert len(sockets) == 1 and isinstance(sockets[0], LeanSocket)
        ack = await client.call("subscribe", {}, timeout=5)
        assert ack["ok"]
    finally:
        await client.disconnect()


async def test_idle_connections_are_pinged_and_kept(serve: Serve) -> None:
    server = await serve(socket_ping_interval_seconds=PING_INTERVAL, socket_ping_timeout_seconds=PING_TIMEOUT)
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(5)]
    for client in clients:
        await client.connect(url_of(server), transports=["websocket"], wait_timeout=5)
    try:
        async with RawSocket.session(server, join=False) as raw:
            pings = 0
            started = time.monotonic()
            while time.monotonic() - started < 6 * PING_INTERVAL:
                _, payload = await raw.frame()
                if payload == b"2":
                    pings += 1
                    raw.writer.write(masked_frame(b"3"))
            assert pings >= 4
            assert all(client.connected for client in clients)
            assert len(server.app[HUB].wire.server.eio.sockets) == 6
    finally:
        for client in clients:
            await client.disconnect()


async def test_a_peer_that_stops_answering_pings_is_dropped_within_the_timeout(serve: Serve) -> None:
    server = await serve(socket_ping_interval_seconds=PING_INTERVAL, socket_ping_timeout_seconds=PING_TIMEOUT)
    async with RawSocket.session(server) as raw:
        started = time.monotonic()
        while (await raw.frame())[0] not in (-1, 0x8):
            pass  # answers nothing
        # One sweep period (a quarter of the shorter setting) of lateness at most.
        assert time.monotonic() - started <= PING_INTERVAL + PING_TIMEOUT + PING_INTERVAL / 4 + 0.2
        for _ in range(50):
            if not server.app[HUB].sessions:
                break
            await asyncio.sleep(0.05)
        assert not server.app[HUB].sessions and not server.app[HUB].wire.server.eio.sockets


async def test_frames_split_across_reads_are_put_back_together(server: TestServer) -> None:
    async with RawSocket.session(server, join=False) as raw:
        connect, subscribe = masked_frame(b"40"), masked_frame(b'420["subscribe",{}]')
        # A fragmented message too: "42" + "1[...]" as a text frame and a continuation frame.
        second = masked_frame(b"42", fin=False) + masked_frame(b'1["subscribe",{}]', 0x0)
        for byte in connect + subscribe + second:
            raw.writer.write(bytes((byte,)))
            await raw.writer.drain()
            await asyncio.sleep(0.001)
        assert (await raw.text()).startswith("40")
        acks = [await raw.text(skip=("2", "42")), await raw.text(skip=("2", "42"))]
        assert sorted(a[:6] for a in acks) == ["430[{\"", "431[{\""]
        assert all(json.loads(a[3:])[0]["ok"] for a in acks)


@pytest.mark.parametrize(("frame", "code"), [
    (masked_frame(b"", length=10 * 1024 * 1024), 1009),  # announces 10 MB: refused from its header
    (masked_frame(b"4" + b"x" * 70_000), 1009),  # over the 64 KiB message limit
    (bytes((0x81, 0x02)) + b"40", 1002),  # not masked
    (masked_frame(b"40", 0x3), 1002),  # reserved opcode
    (masked_frame(b"\xff\xfe"), 1007),  # text that is not UTF-8
    (masked_frame(b"x", 0x0), 1002),  # a continuation of nothing
], ids=["announced-huge", "too-big", "unmasked", "bad-opcode", "bad-utf8", "stray-continuation"])
async def test_a_bad_frame_gets_a_close_and_the_server_goes_on(frame: bytes, code: int, server: TestServer) -> None:
    async with RawSocket.session(server) as raw:
        raw.writer.write(frame)
        try:
            assert await raw.close_code() == code
            assert (await raw.frame())[0] == -1
        except ConnectionResetError:
            assert code == 1009  # closed with the client's bytes unread: the kernel resets it
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url_of(server), transports=["websocket"], wait_timeout=5)
    assert (await client.call("subscribe", {}, timeout=5))["ok"]
    await client.disconnect()


async def test_websocket_ping_and_close_frames_are_answered(server: TestServer) -> None:
    async with RawSocket.session(server, join=False) as raw:
        raw.writer.write(masked_frame(b"hello", 0x9))
        assert await raw.frame() == (0xA, b"hello")
        raw.writer.write(masked_frame((1000).to_bytes(2, "big"), 0x8))
        assert await raw.close_code() == 1000


async def test_a_server_disconnect_sends_what_was_queued_then_closes(server: TestServer) -> None:
    async with RawSocket.session(server) as raw:
        hub = server.app[HUB]
        (sid,) = hub.sessions
        await hub.disconnect(sid)
        assert await raw.text() == "41"  # Socket.IO's disconnect: a client closes on it
        # Engine.IO's own close (python-socketio's shutdown, a socket that never says "40"):
        eio = hub.wire.server.eio
        (eio_sid,) = eio.sockets
        await eio.disconnect(eio_sid)
        assert await raw.text() == "1"
        assert await raw.close_code() == 1000
        assert not eio.sockets


async def test_a_reader_that_stops_reading_has_its_messages_held_and_counted_in_order(server: TestServer) -> None:
    async with RawSocket.session(server) as raw:
        hub = server.app[HUB]
        (session,) = hub.sessions.values()
        body = "x" * 4000
        sent = 0
        # The client reads nothing: the kernel's buffers fill, then the transport's, then the backlog.
        while hub.wire.pending(session.link) == 0 and sent < 20_000:
            assert hub.wire.send(session.link, encode_message("test", {"n": sent, "body": body}, weight=3))
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0)
        assert hub.wire.pending(session.link) == 3  # the one message held back, by its weight
        assert hub.wire.send(session.link, encode_message("test", {"n": sent, "body": body}, weight=3))
        assert hub.wire.pending(session.link) == 6
        received = []
        while len(received) <= sent:
            text = await raw.text()
            if text.startswith('42["test"'):
                received.append(json.loads(text[2:])[1]["n"])
        assert received == list(range(sent + 1))
        assert hub.wire.pending(session.link) == 0


async def test_without_what_the_hand_over_needs_websockets_stay_on_python_engineio(
        serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(websocket, "REQUEST_HANDLER_SLOTS", (*websocket.REQUEST_HANDLER_SLOTS, "_renamed"))
    server = await serve()
    assert "aiohttp RequestHandler._renamed missing" in caplog.text
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url_of(server), transports=["websocket"], wait_timeout=5)
    try:
        (engine_socket,) = server.app[HUB].wire.server.eio.sockets.values()
        assert not isinstance(engine_socket, LeanSocket)
        assert (await client.call("subscribe", {}, timeout=5))["ok"]
    finally:
        await client.disconnect()
