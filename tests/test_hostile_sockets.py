"""Socket.IO clients that send what no client should: each gets a precise answer or is closed with
one warning, and the server logs no error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .conftest import Listener, url_of

OpenListener = Callable[..., Awaitable[Listener]]


@pytest.mark.parametrize("since", [10**400, 2**63, -(10**30)])
async def test_a_since_too_large_for_a_cursor_is_answered(since: int, server: TestServer,
                                                          listener: OpenListener) -> None:
    client = await listener(url_of(server))
    # python-engineio's JSON reader raises on integers of 100+ digits: the packet was dropped, and
    # with it the ack the client waits for.
    ack = await asyncio.wait_for(client.subscribe({"since": since}), 5)
    assert ack["error"]["code"] == "invalid_since"
    assert (await client.subscribe({"since": 0}))["ok"]


async def open_raw_socket(http: aiohttp.ClientSession, server: TestServer) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url_of(server).replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40")
    assert (await ws.receive_str()).startswith("40")
    return ws


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The next message that is not a ping or a heartbeat."""
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT or not (
                    message.data == "2" or message.data.startswith('42["chainhook:heartbeat"')):
                return message


def only_warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> None:
    assert [r.levelno for r in caplog.records if text in r.getMessage()] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("frame", [b"\x00\x01\x02stray", '44{"x":1}', "4", '45-["subscribe"]'],
                         ids=["binary", "connect-error", "empty", "bad-attachment-count"])
async def test_a_malformed_socketio_packet_closes_the_socket_with_one_warning(
        frame: bytes | str, server: TestServer, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ws = await open_raw_socket(http, server)
    await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
    # Engine.IO ends a session with a CLOSE packet ("1"); a real client then drops the connection.
    message = await next_message(ws)
    assert (message.type, message.data) == (aiohttp.WSMsgType.TEXT, "1")
    await ws.close()
    only_warnings_about(caplog, "malformed packet")


async def test_a_frame_engineio_cannot_read_is_ignored_with_one_warning(
        server: TestServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ws = await open_raw_socket(http, server)
    await ws.send_str("9not-a-packet")
    await ws.send_str('421["subscribe",{}]')
    message = await next_message(ws)
    assert message.data.startswith('431[{"ok":true')
    await ws.close()
    only_warnings_about(caplog, "cannot read")
