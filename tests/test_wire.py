"""The wire: python-engineio's internals are checked at start-up, and without them every change
still arrives once and in order, through python-engineio's public send path."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from timebank_realtime.keys import HUB
from timebank_realtime.realtime import wire

from .conftest import Listener, Serve, eventually, make_settings, post_webhook, url_of
from .payloads import synthetic_payload

OpenListener = Callable[..., Awaitable[Listener]]


def test_the_installed_python_engineio_has_what_direct_writes_read() -> None:
    # Our own server: a stock one would set python-engineio's logger to ERROR for the whole process.
    assert wire.missing_internals(wire.Wire(make_settings("postgresql://unused")).server) == []


def test_a_python_engineio_without_them_is_named_and_sent_to_through_its_public_path(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(wire, "SOCKET_ATTRIBUTES", (*wire.SOCKET_ATTRIBUTES, "renamed_in_a_later_release"))
    with caplog.at_level(logging.WARNING, logger=wire.__name__):
        fallback = wire.Wire(make_settings("postgresql://unused"))
    assert not fallback.direct
    assert "AsyncSocket.renamed_in_a_later_release" in caplog.text


# A python-engineio client refuses a polling response of more than 16 packets: it polls for batches.
@pytest.mark.parametrize(("transport", "batch"), [("websocket", False), ("polling", True)])
async def test_the_public_path_delivers_replay_then_live_once_in_order(
        serve: Serve, http: aiohttp.ClientSession, listener: OpenListener, monkeypatch: pytest.MonkeyPatch,
        transport: str, batch: bool) -> None:
    monkeypatch.setattr(wire, "QUEUE_ATTRIBUTES", (*wire.QUEUE_ATTRIBUTES, "_renamed"))
    server = await serve()
    hub = server.app[HUB]
    assert not hub.wire.direct
    for height in range(1, 4):
        await post_webhook(http, url_of(server), synthetic_payload(height, 30))
    await eventually(lambda: hub.cursor == 3 * 32)  # 31 rows and their block a delivery
    client = await listener(url_of(server), transport, {"batch": batch})
    ack = await client.subscribe({"since": 10})
    for height in range(4, 6):  # live, some of it while the replay may still run
        await post_webhook(http, url_of(server), synthetic_payload(height, 30))
    await eventually(lambda: len(client.received) == 5 * 31 - 10, within=20)
    assert client.cursors == [c for n in range(5) for c in range(32 * n + 1, 32 * n + 32) if c > 10]
    assert client.markers("eose") == [{"id": ack["id"], "cursor": ack["cursor"]}]
    eose_at = [kind for kind, _ in client.timeline if kind != "heartbeat"].index("eose")
    assert eose_at >= 3 * 31 - 10  # the whole replay came before it
    assert hub.wire.writes["direct"] == 0 and hub.wire.writes["queued"] > 0


async def test_the_public_path_sends_what_was_sent_before_a_disconnect_first(
        serve: Serve, listener: OpenListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "QUEUE_ATTRIBUTES", (*wire.QUEUE_ATTRIBUTES, "_renamed"))
    server = await serve(heartbeat_seconds=3600)  # only ours below
    hub = server.app[HUB]
    client = await listener(url_of(server))
    await eventually(lambda: len(hub.sessions) == 1)
    (sid, session), = hub.sessions.items()
    # Queued for the writer task and, in the same step, the disconnect: a resync ends this way.
    for number in range(200):
        assert hub.wire.send(session.link, wire.encode_message("chainhook:heartbeat", {"cursor": number}))
    await hub.disconnect(sid)
    await eventually(lambda: not client.client.connected)
    assert [message["cursor"] for message in client.markers("heartbeat")] == list(range(200))
