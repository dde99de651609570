"""Replay from a cursor, the gap-free handoff to live, heartbeats and slow consumers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB

from .conftest import Listener, Serve, event_cursors, eventually, load_fixture, post_webhook, settle, url_of
from .expected import FREDDIE, MONSTERS
from .payloads import synthetic_payload
from .tcp_proxy import TcpProxy

OpenListener = Callable[..., Awaitable[Listener]]
ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


async def all_cursors(db: asyncpg.Connection, where: str = "TRUE", *args: Any) -> list[int]:
    rows = await db.fetch(f'SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_events e '
                          f'ON e.id = c.event_id WHERE {where} ORDER BY 1', *args)
    return [r["cursor"] for r in rows]


async def test_since_replays_matching_changes_then_eose_then_live(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))  # cursors 1-6, its block 7
    await post_webhook(http, url_of(server), load_fixture(NFT))       # cursors 8-12, its block 13
    await eventually(lambda: server.app[HUB].cursor == 13)
    client = await listener(url_of(server))
    ack = await client.subscribe({"contract": FREDDIE, "since": 1})
    assert (ack["ok"], ack["cursor"]) == (True, 13)
    await eventually(lambda: bool(client.markers("eose")))
    assert client.markers("eose") == [{"id": ack["id"], "cursor": 13}]
    assert client.cursors == await all_cursors(db, "contract_id = $1 AND c.\"cursor\" > 1", FREDDIE)
    assert client.cursors == [3, 4]  # cursor 1 (the contract call) is not after since=1

    await post_webhook(http, url_of(server), load_fixture("v1-stacks-regtest-stx-lock-event.json"))
    reorg = load_fixture(ARKADIKO)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(server), reorg)
    await eventually(lambda: len(client.received) == 5)
    kinds = [kind for kind, _ in client.timeline if kind != "heartbeat"]
    assert kinds == ["event", "event", "eose", "rollback", "rollback", "rollback"]
    assert client.cursors == sorted(client.cursors)


async def test_since_zero_and_old_cursors_replay_from_the_start(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    await post_webhook(http, url_of(server), load_fixture(NFT))
    # Pushed already, so that all five come from the replay (had the tailer not caught up, they would
    # come live after an eose at cursor 0, which is also correct).
    await eventually(lambda: server.app[HUB].cursor == 6)  # five events, then their block
    client = await listener(url_of(server))
    ack = await client.subscribe({"since": 0})
    await eventually(lambda: bool(client.markers("eose")))
    assert client.cursors == [1, 2, 3, 4, 5]
    assert client.markers("eose")[0] == {"id": ack["id"], "cursor": 6}


async def test_since_now_is_live_only_and_still_ends_with_eose(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    await post_webhook(http, url_of(server), load_fixture(NFT))
    await eventually(lambda: server.app[HUB].cursor == 6)
    client = await listener(url_of(server))
    ack = await client.subscribe({"since": "now"})
    await eventually(lambda: bool(client.markers("eose")))
    assert client.received == []
    assert client.markers("eose")[0]["cursor"] == ack["cursor"]


async def test_a_cursor_from_the_future_is_refused(server: TestServer, http: aiohttp.ClientSession,
                                                   db: asyncpg.Connection, listener: OpenListener) -> None:
    await post_webhook(http, url_of(server), load_fixture(NFT))
    client = await listener(url_of(server))
    ack = await client.subscribe({"since": 7})
    assert ack["error"]["code"] == "cursor_in_future"
    assert (await client.subscribe({"since": 6}))["ok"]


@pytest.mark.parametrize("auth", [None, {"batch": True}], ids=["per-change", "batched"])
async def test_handoff_during_a_10k_replay_has_no_gap_and_no_duplicate(
        auth: Any, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    server = await serve(replay_batch_size=500, slow_consumer_backlog=100_000)
    for block in range(3):
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(1000 + block, 3500))
        assert status == 200
    backlog = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    assert backlog >= 10_000
    client = await listener(url_of(server), auth=auth)
    firehose = await listener(url_of(server), auth=auth)
    live_from = (await firehose.subscribe({}))["cursor"]

    async def keep_delivering() -> None:
        for block in range(25):
            status, _ = await post_webhook(http, url_of(server), synthetic_payload(2000 + block, 20))
            assert status == 200

    delivering = asyncio.create_task(keep_delivering())
    await asyncio.sleep(0.05)
    ack = await client.subscribe({"since": 0, "contract": MONSTERS})
    await delivering
    events = await event_cursors(db)
    await eventually(lambda: len(client.received) == len(events), within=60)
    await settle()
    assert client.cursors == events
    assert bool(client.frames) == (auth is not None)
    eose = client.markers("eose")
    assert len(eose) == 1 and eose[0]["id"] == ack["id"]
    # Everything tagged for the subscription came before its eose; nothing after it is tagged.
    position = [kind for kind, _ in client.timeline].index("eose")
    tagged = [m["cursor"] for _, m in client.timeline[:position] if m.get("subscription") == ack["id"]]
    assert tagged[-1] == eose[0]["cursor"]
    assert not any(m.get("subscription") for _, m in client.timeline[position + 1:])
    # A live-only subscriber gets everything after its ack's cursor, whatever the replay next to it does.
    assert firehose.cursors == await event_cursors(db, live_from)


async def test_heartbeat_carries_cursor_and_chain_tip(serve: Serve, http: aiohttp.ClientSession,
                                                      db: asyncpg.Connection, listener: OpenListener) -> None:
    server = await serve(heartbeat_seconds=0.2)
    await post_webhook(http, url_of(server), load_fixture(NFT))
    client = await listener(url_of(server))
    await eventually(lambda: any(beat["cursor"] == 6 for beat in client.markers("heartbeat")))
    beat = client.markers("heartbeat")[-1]
    assert beat["tip"]["block_height"] == 112195
    assert beat["tip"]["block_hash"] == "0x4dc6cdb7defffdecb88322dee98da95038d25fd3c066bb4f78562563ce5418b8"
    assert beat["tip"]["last_delivery_at"] is not None
    assert beat["server_time"]


class StalledReader:
    """A raw Engine.IO websocket client that subscribes and then stops reading, with a tiny receive
    buffer so that the server's writes back up quickly."""

    def __init__(self, *, batch: bool = False, subscription: str = "{}") -> None:
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connect_packet = '40{"batch":true}' if batch else "40"
        self.subscription = subscription
        # The cursor of every change read, in order (batch frames unpacked).
        self.cursors: list[int] = []

    @staticmethod
    def _small_socket(addr_info: Any) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    async def open(self, url: str) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=self._small_socket))
        self.ws = await self.session.ws_connect(url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                                max_msg_size=0)
        assert (await self.ws.receive_str()).startswith("0")       # engine.io open
        await self.ws.send_str(self.connect_packet)                  # socket.io connect
        assert (await self.ws.receive_str()).startswith("40")
        await self.ws.send_str(f'420["subscribe",{self.subscription}]')
        assert (await self.ws.receive_str()).startswith("430")      # the ack; now we stop reading

    async def drain_for_resync(self, *, stop_at_eose: bool = False) -> dict[str, Any] | None:
        """Read everything that was queued for us; return the resync message if there was one."""
        assert self.ws is not None
        while True:
            message = await asyncio.wait_for(self.ws.receive(), 30)
            if message.type != aiohttp.WSMsgType.TEXT:
                return None
            text = message.data
            if text == "2":
                await self.ws.send_str("3")
            elif text.startswith('42["chainhook:resync"'):
                payload: dict[str, Any] = json.loads(text[2:])[1]
                return payload
            elif text.startswith('42["chainhook:batch"'):
                self.cursors.extend(change["cursor"] for change in json.loads(text[2:])[1]["changes"])
            elif text.startswith(('42["chainhook:event"', '42["chainhook:rollback"')):
                self.cursors.append(json.loads(text[2:])[1]["cursor"])
            elif stop_at_eose and text.startswith('42["chainhook:eose"'):
                return None  # the replay ended: there will be no resync

    async def subscribe_more(self, subscription: str) -> None:
        """Send another subscribe; its ack is not read, like everything else now."""
        assert self.ws is not None
        await self.ws.send_str(f'421["subscribe",{subscription}]')

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


@pytest.mark.parametrize("batch", [False, True], ids=["per-change", "batched"])
async def test_slow_consumer_gets_resync_and_others_are_unaffected(
        batch: bool, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    server = await serve(slow_consumer_backlog=200, socket_ping_interval_seconds=25)
    healthy = await listener(url_of(server), auth={"batch": True} if batch else None)
    await healthy.subscribe({})
    stalled = StalledReader(batch=batch)
    await stalled.open(url_of(server))
    try:
        for block in range(6):
            status, body = await post_webhook(http, url_of(server), synthetic_payload(3000 + block, 1000, padding=1500))
            assert status == 200
            # Healthy is keeping up with what is offered: it shares this process's one core with the
            # server, so unpaced it could fall 4x the limit behind on a slow machine and be resynced too.
            # (The delivery's block takes the last cursor: a firehose of events ends just before it.)
            await eventually(lambda upto=body["cursor"] - 1: healthy.cursors[-1:] == [upto], within=30)
        total = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
        assert total == body["cursor"]
        events = await event_cursors(db)
        assert healthy.cursors == events
        resync = await stalled.drain_for_resync()
        assert resync is not None
        assert 0 < resync["cursor"] < total
        assert list(resync["subscriptions"].values()) == [resync["cursor"]]
        assert "behind" in resync["reason"]
        # The resync says where the socket's changes stopped: resuming from it misses nothing and
        # repeats nothing (it once pointed at the end of a run the socket was never sent).
        assert stalled.cursors == [c for c in events if stalled.cursors[0] <= c <= resync["cursor"]]
    finally:
        await stalled.close()
    # The stalled connection was dropped; the healthy one is still there.
    await eventually(lambda: len(server.app[HUB].sessions) == 1, within=30)
    assert healthy.client.connected


@pytest.mark.parametrize("batch", [False, True], ids=["per-change", "batched"])
async def test_a_replay_to_a_reader_that_stopped_waits_for_it_then_resyncs(
        batch: bool, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve(slow_consumer_backlog=200, replay_batch_size=500, socket_ping_timeout_seconds=2,
                         socket_ping_interval_seconds=25)
    for block in range(8):  # 24 MB: more than the kernel's socket buffers can take on loopback
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(6000 + block, 1000, padding=3000))
        assert status == 200
    total = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    # Pushed already, so that the whole backlog is the replay's: changes pushed after the subscribe
    # would be held for it, and 4x the limit held resyncs it at once, before anything is queued.
    await eventually(lambda: server.app[HUB].cursor == total, within=30)
    stalled = StalledReader(batch=batch, subscription='{"since":0}')
    await stalled.open(url_of(server))
    try:
        hub = server.app[HUB]
        session = next(iter(hub.sessions.values()))
        # Watch the whole replay, however late it starts: it queues no more than the limit while it
        # waits for a reader that takes nothing, then gives up on it after a ping timeout.
        most_queued = 0
        deadline = asyncio.get_running_loop().time() + 30
        # No await between the check and the sample, so the resync's own message is never counted.
        while not session.resyncing:
            most_queued = max(most_queued, hub.fanout.outbox.pending(session))
            assert asyncio.get_running_loop().time() < deadline, f"no resync; most queued {most_queued}"
            await asyncio.sleep(0.02)
        assert 0 < most_queued <= 200
        resync = await stalled.drain_for_resync(stop_at_eose=True)
        assert resync is not None and 0 <= resync["cursor"] < total
    finally:
        await stalled.close()


async def stalled_replay(serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection,
                         proxy: TcpProxy | None = None) -> tuple[TestServer, StalledReader, Any]:
    """A socket whose replay from 0 waits for a reader that takes nothing (for up to a minute);
    through ``proxy`` (retargeted to the server) if one is given."""
    server = await serve(slow_consumer_backlog=200, replay_batch_size=100, socket_ping_timeout_seconds=60,
                         socket_ping_interval_seconds=25)
    for block in range(4):  # 12 MB: more than the kernel's socket buffers take on loopback
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(7000 + block, 1000, padding=3000))
        assert status == 200
    total = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == total, within=30)
    stalled = StalledReader(batch=True, subscription='{"since":0}')
    if proxy is not None:
        proxy.target_port = server.port  # type: ignore[assignment]
    await stalled.open(proxy.url if proxy is not None else url_of(server))
    hub = server.app[HUB]
    session = next(iter(hub.sessions.values()))
    await eventually(lambda: hub.fanout.outbox.pending(session) >= 100, within=30)  # the replay now waits for room
    return server, stalled, session


async def test_live_changes_held_for_a_waiting_replay_are_bounded(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Live changes for a subscription whose replay is waiting are held for it, up to four times the
    slow-consumer limit; past that the socket is resynced at once. Nothing bounded them before: the
    held changes grew with every delivery until the replay's next batch."""
    server, stalled, session = await stalled_replay(serve, http, db)
    try:
        for block in range(4):
            status, _ = await post_webhook(http, url_of(server), synthetic_payload(7100 + block, 300))
            assert status == 200
            head = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
            await eventually(lambda head=head: server.app[HUB].cursor == head, within=30)
            assert len(session.held) <= 4 * 200
        assert session.resyncing  # 1200 live changes for it: the fourth delivery went past 800
        resync = await stalled.drain_for_resync(stop_at_eose=True)
        assert resync is not None and "replay fell too far behind" in resync["reason"]
        # Where the replay had got to: resuming from there misses nothing.
        assert resync["cursor"] == stalled.cursors[-1] < 4000
        assert stalled.cursors == [c for c in await event_cursors(db) if c <= resync["cursor"]]
    finally:
        await stalled.close()


async def test_a_replay_waiting_for_a_reader_that_is_gone_ends_quietly(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection,
        caplog: pytest.LogCaptureFixture) -> None:
    """The link of a socket whose replay waits for room drops: the replay stops and nobody is called a
    slow consumer. (A replay that outlives its socket, say behind a slow read, once logged and
    counted a resync of a socket long gone; a probe saw it 2-11 s after the disconnect.)"""
    proxy = await TcpProxy(0, buffer_bytes=4096).start()
    try:
        server, stalled, session = await stalled_replay(serve, http, db, proxy)
        hub = server.app[HUB]
        assert session.replay_running
        assert proxy.cut() > 0
        await eventually(lambda: session.sid not in hub.sessions, within=10)
        await eventually(lambda: not session.replay_running, within=2)
        await settle(0.3)
        assert not session.resyncing
        assert not [r for r in caplog.records if "slow consumer" in r.getMessage()]
        await stalled.close()
    finally:
        await proxy.close()


async def test_a_live_only_subscription_goes_live_while_another_replay_waits(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """A subscription with nothing to replay goes live (its eose queued) at once, also while another
    replay of the socket waits for the reader. It once waited for that replay's next batch."""
    _, stalled, session = await stalled_replay(serve, http, db)
    try:
        await stalled.subscribe_more('{"contract":"SP000000000000000000002Q6VF78.nothing"}')
        await eventually(lambda: len(session.subscriptions) == 2, within=10)
        newest = max(session.subscriptions.values(), key=lambda s: int(s.id.split("-")[1]))
        await eventually(lambda: newest.live, within=5)
        assert not session.resyncing
        assert [s.live for s in session.subscriptions.values()].count(False) == 1  # the replay still waits
    finally:
        await stalled.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_overlapping_subscriptions_with_replay_deliver_each_live_change_once(
        transport: str, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    client = await listener(url_of(server), transport)
    await client.subscribe({"event_type": "print_event"})
    await client.subscribe({"contract": FREDDIE, "since": 0})
    await eventually(lambda: len(client.markers("eose")) == 2)
    await post_webhook(http, url_of(server), synthetic_payload(4000, 3, contract=FREDDIE))
    await eventually(lambda: len(client.received) >= 3 + 3)
    await settle()
    live = [c for c in client.cursors if c > 7]  # (the first delivery's block is 7)
    assert live == [8, 9, 10, 11]  # the contract call and three prints, each once
