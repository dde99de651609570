"""timebank_realtime_client over a real server: every change once, in order, across failures."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Serve, eventually, load_fixture, post_webhook, url_of
from tests.expected import MONSTERS
from tests.payloads import nft_block
from tests.processes import ServiceProcess
from tests.tcp_proxy import TcpProxy
from timebank_realtime.keys import HUB
from timebank_realtime_client import (
    Change,
    ConnectionState,
    Heartbeat,
    JsonFileCursorStore,
    MemoryCursorStore,
    SubscriptionRefused,
    TimebankClient,
)

NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def __call__(self, change: Change) -> None:
        self.changes.append(change)

    @property
    def cursors(self) -> list[int]:
        return [change.cursor for change in self.changes]


async def matching_cursors(db: asyncpg.Connection, where: str, *args: Any) -> list[int]:
    rows = await db.fetch(f'SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id '
                          f'WHERE {where} ORDER BY 1', *args)
    return [r["cursor"] for r in rows]


@pytest.fixture
async def proxy(server: TestServer) -> AsyncIterator[TcpProxy]:
    tcp = await TcpProxy(server.port).start()  # type: ignore[arg-type]
    yield tcp
    await tcp.close()


async def deliver_blocks(http: aiohttp.ClientSession, url: str, numbers: range, pause: float = 0.03) -> None:
    for number in numbers:
        status, _ = await post_webhook(http, url, nft_block(number))
        assert status == 200
        await asyncio.sleep(pause)


async def test_client_replays_then_follows_live(server: TestServer, http: aiohttp.ClientSession,
                                                db: asyncpg.Connection) -> None:
    await deliver_blocks(http, url_of(server), range(3), pause=0)
    prints, everything = Recorder(), Recorder()
    async with TimebankClient(url_of(server)) as client:
        await client.subscribe({"event_type": "print_event"}, prints, since=0)
        await client.subscribe({}, everything, since=5)
        await deliver_blocks(http, url_of(server), range(3, 5), pause=0)
        await eventually(lambda: len(everything.changes) == 20)
        assert prints.cursors == await matching_cursors(db, "event_type = 'print_event'")
        assert everything.cursors == await matching_cursors(db, 'c."cursor" > 5')
        assert len(everything.cursors) == 20
        # It asked for batches: one frame per delivery.
        assert [session.batched for session in server.app[HUB].sessions.values()] == [True]


async def test_kill_the_connection_mid_stream_loses_and_repeats_nothing(
        server: TestServer, proxy: TcpProxy, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    recorder = Recorder()
    client = TimebankClient(proxy.url, backoff_initial=0.05, backoff_max=0.5)
    await client.start()
    await client.subscribe({"contract": MONSTERS}, recorder, since=0)
    delivering = asyncio.create_task(deliver_blocks(http, url_of(server), range(40)))
    for _ in range(4):
        await asyncio.sleep(0.25)
        assert proxy.cut() > 0
    await delivering
    expected = await matching_cursors(db, "contract_id = $1", MONSTERS)
    assert len(expected) == 160
    await eventually(lambda: len(recorder.changes) >= len(expected), within=30)
    await asyncio.sleep(0.5)
    await client.close()
    assert recorder.cursors == expected
    assert client.connections >= 3


async def test_restart_the_server_process_loses_and_repeats_nothing(
        tmp_path: Path, server: TestServer, database_url: str, http: aiohttp.ClientSession,
        db: asyncpg.Connection) -> None:
    node = ServiceProcess(tmp_path / "node-1.log", DATABASE_URL=database_url)
    await node.wait_ready()
    recorder = Recorder()
    client = TimebankClient(node.url, backoff_initial=0.1, backoff_max=1.0)
    try:
        await client.start()
        await client.subscribe({}, recorder, since=0)
        # Deliveries keep arriving through another node while this one dies and comes back.
        delivering = asyncio.create_task(deliver_blocks(http, url_of(server), range(30), pause=0.05))
        await asyncio.sleep(0.4)
        node.kill()
        await asyncio.sleep(0.5)
        node.stop()
        node = ServiceProcess(tmp_path / "node-2.log", port=node.port, DATABASE_URL=database_url)
        await node.wait_ready()
        await delivering
        await eventually(lambda: len(recorder.changes) == 150, within=30)
        await asyncio.sleep(0.5)
        assert recorder.cursors == await matching_cursors(db, "TRUE")
        assert client.connections >= 2
    finally:
        await client.close()
        node.stop()


async def test_refused_subscription_raises_with_its_code(server: TestServer, db: asyncpg.Connection) -> None:
    async with TimebankClient(url_of(server)) as client:
        with pytest.raises(SubscriptionRefused) as refused:
            await client.subscribe({"event_type": "print_event"}, Recorder(), since=99)
        assert refused.value.code == "cursor_in_future"


async def test_rollbacks_reach_the_subscription_they_match(server: TestServer, http: aiohttp.ClientSession,
                                                           db: asyncpg.Connection, serve: Serve) -> None:
    recorder = Recorder()
    async with TimebankClient(url_of(server)) as client:
        await client.subscribe({"event_type": "nft_mint_event"}, recorder)
        payload = load_fixture(NFT)
        await post_webhook(http, url_of(server), payload)
        reorg = copy.deepcopy(payload)
        reorg["rollback"], reorg["apply"] = reorg["apply"], []
        await post_webhook(http, url_of(server), reorg)
        await eventually(lambda: len(recorder.changes) == 2)
    assert [change.kind for change in recorder.changes] == ["event", "rollback"]
    assert recorder.changes[1].canonical is False


async def test_overlapping_replays_reach_both_subscriptions(serve: Serve, http: aiohttp.ClientSession,
                                                            db: asyncpg.Connection) -> None:
    """Messages that name several subscriptions (``subscriptions``) reach each of them."""
    server = await serve(replay_batch_size=10)
    await deliver_blocks(http, url_of(server), range(20), pause=0)
    total = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == total)
    everything, monsters = Recorder(), Recorder()
    async with TimebankClient(url_of(server)) as client:
        await asyncio.gather(client.subscribe({}, everything, since=0),
                             client.subscribe({"contract": MONSTERS}, monsters, since=0))
        expected = await matching_cursors(db, "contract_id = $1", MONSTERS)
        events = await matching_cursors(db, "TRUE")
        await eventually(lambda: len(everything.changes) == len(events) and len(monsters.changes) == len(expected))
        await asyncio.sleep(0.3)
        assert everything.cursors == events
        assert monsters.cursors == expected


async def test_a_connection_lost_while_resubscribing_is_retried(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """The connection drops while the client is still resubscribing after a reconnect. The subscribe
    call then fails with a Socket.IO error (not a connection error), which once ended the client's
    supervisor: no reconnect ever again, a feed stopped for good."""
    server = await serve(subscribe_rate_per_second=1)  # one subscribe a second: resubscribing takes a while
    proxy = await TcpProxy(server.port).start()  # type: ignore[arg-type]
    first, second = Recorder(), Recorder()
    client = TimebankClient(proxy.url, backoff_initial=0.05, backoff_max=0.2)
    try:
        await client.start()
        one = await client.subscribe({"contract": MONSTERS}, first, since=0)
        await asyncio.sleep(1.1)
        await client.subscribe({}, second, since=0)
        assert proxy.cut() > 0
        # Reconnected and the first subscription acked; the second is refused (rate_limited) and waits
        # a second before it asks again. Drop the connection in that second.
        await eventually(lambda: client.connections == 2 and one.server_id is not None, within=10)
        assert proxy.cut() > 0
        # At once when the client sees the link gone, whether it was waiting to ask again or for an answer.
        await eventually(lambda: client.connections >= 3, within=10)
        await deliver_blocks(http, url_of(server), range(2), pause=0)
        await eventually(lambda: len(second.changes) == 10 and len(first.changes) == 8, within=20)
        assert first.cursors == await matching_cursors(db, "contract_id = $1", MONSTERS)
        assert second.cursors == await matching_cursors(db, "TRUE")
    finally:
        await client.close()
        await proxy.close()


async def test_handlers_that_fall_behind_pause_the_link_instead_of_filling_memory(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Past max_pending changes waiting for their handlers, the client drops the link until they are down
    to a tenth, then resumes after the last change it took: the backlog waits in the server's log."""
    server = await serve(replay_batch_size=5)
    await deliver_blocks(http, url_of(server), range(12), pause=0)  # 60 changes
    most_pending = 0
    client: TimebankClient

    async def slow(change: Change) -> None:
        nonlocal most_pending
        most_pending = max(most_pending, client.pending)
        recorder.changes.append(change)
        await asyncio.sleep(0.005)

    recorder = Recorder()
    client = TimebankClient(url_of(server), max_pending=10, backoff_initial=0.01, backoff_max=0.05)
    try:
        await client.start()
        await client.subscribe({}, slow, since=0)
        await deliver_blocks(http, url_of(server), range(12, 16), pause=0.05)  # and 20 live
        expected = await matching_cursors(db, "TRUE")
        await eventually(lambda: len(recorder.changes) >= len(expected), within=30)
        await asyncio.sleep(0.5)
        assert recorder.cursors == expected and len(expected) == 80
        assert client.connections >= 2  # it paused at least once
        assert most_pending < 40  # a few frames may be on their way when it pauses
    finally:
        await client.close()


async def test_heartbeats_and_connection_states_reach_their_callbacks(serve: Serve, http: aiohttp.ClientSession,
                                                                     db: asyncpg.Connection) -> None:
    server = await serve(heartbeat_seconds=0.2)
    await deliver_blocks(http, url_of(server), range(1), pause=0)
    head = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == head)
    beats: list[Heartbeat] = []
    states: list[ConnectionState] = []
    async with TimebankClient(url_of(server), on_heartbeat=beats.append, on_state=states.append) as client:
        assert client.state == "connected"
        await eventually(lambda: len(beats) >= 2)
        for hub_session in list(server.app[HUB].sessions):
            await server.app[HUB].disconnect(hub_session)
        await eventually(lambda: client.connections == 2 and client.state == "connected")
    assert states == ["connecting", "connected", "disconnected", "connecting", "connected", "closed"]
    assert beats[0].cursor == head and beats[0].tips["testnet"].block_height == 300_000


async def test_a_subscribe_left_unanswered_reconnects_and_subscribes_again(
        server: TestServer, proxy: TcpProxy, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """The ack never comes (the server's bytes stop on the way): after the call's 10 s, the client
    reconnects and subscribes it again, instead of raising and leaving its replay unclaimed."""
    await deliver_blocks(http, url_of(server), range(2), pause=0)
    recorder = Recorder()
    client = TimebankClient(proxy.url, backoff_initial=0.05, backoff_max=0.2)
    try:
        await client.start()
        proxy.pause()
        # The proxy is in the middle of a read: the next chunk still passes. The server pings every
        # second (the suite's settings): let one ping be that chunk; from then on nothing comes.
        await asyncio.sleep(2.5)
        subscription = await client.subscribe({"contract": MONSTERS}, recorder, since=0)
        proxy.resume()
        assert subscription.server_id is None
        await eventually(lambda: client.connections == 2 and client.state == "connected")
        await deliver_blocks(http, url_of(server), range(2, 3), pause=0)
        expected = await matching_cursors(db, "contract_id = $1", MONSTERS)
        await eventually(lambda: len(recorder.changes) >= len(expected))
        await asyncio.sleep(0.5)
        assert recorder.cursors == expected and len(expected) == 12
    finally:
        await client.close()


async def test_a_key_saved_at_its_first_ack_holds_where_it_starts_not_changes_still_queued(
        server: TestServer, proxy: TcpProxy, http: aiohttp.ClientSession, db: asyncpg.Connection,
        tmp_path: Path) -> None:
    """The replayed changes that follow a subscribe's ack can be handled before the ack (they came in the
    same read: the client was busy, or the network held them), and the client queues them at the ack.
    It then saved the last of them as the key's cursor at once, before their handlers ran: a process
    stopped there resumed after changes it had never handled, and lost them."""
    await deliver_blocks(http, url_of(server), range(4), pause=0)
    expected = await matching_cursors(db, "TRUE")
    head = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == head)
    cursor_file = tmp_path / "cursors.json"
    first: list[int] = []

    async def slow(change: Change) -> None:
        first.append(change.cursor)
        await asyncio.sleep(0.5)

    client = TimebankClient(proxy.url, store=JsonFileCursorStore(cursor_file))
    try:
        await client.start()
        # Hold the server's bytes (a ping is the chunk that still passes, as above) while it acks and
        # replays, then let them through together.
        proxy.pause()
        await asyncio.sleep(2.5)
        subscribing = asyncio.create_task(client.subscribe({}, slow, key="bot", since=0))
        await eventually(lambda: any(session.subscriptions for session in server.app[HUB].sessions.values()))
        await asyncio.sleep(0.3)
        proxy.resume()
        subscription = await subscribing
        assert client.pending > 0 and subscription.last_cursor == expected[-1]  # queued at the ack
        assert json.loads(cursor_file.read_text()) == {"bot": 0}
    finally:
        await client.close()
    # The next run gets every change the first did not finish handling (the one in its handler again).
    second = Recorder()
    async with TimebankClient(url_of(server), store=JsonFileCursorStore(cursor_file)) as again:
        await again.subscribe({}, second, key="bot", since=0)
        await eventually(lambda: len(second.changes) >= len(expected))
        await asyncio.sleep(0.3)
    assert first in ([], expected[:1])
    assert second.cursors == expected


async def test_a_subscribe_sent_as_the_link_drops_returns_at_once_and_leaves_the_next_link_alone(
        server: TestServer, proxy: TcpProxy, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """The link is cut and the client has not seen it yet: its subscribe goes out on a dead link, and
    python-socketio waits out the call's whole timeout for an answer that cannot come. The client waited
    with it (10 s in the application's ``subscribe``), then took the timeout for a stalled link and
    dropped the link it had made meanwhile, a healthy one: one reconnect more, for nothing."""
    await deliver_blocks(http, url_of(server), range(2), pause=0)
    recorder = Recorder()
    client = TimebankClient(proxy.url, backoff_initial=0.05, backoff_max=0.2)
    try:
        await client.start()
        assert proxy.cut() > 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        await client.subscribe({"contract": MONSTERS}, recorder, since=0)
        assert loop.time() - began < 3
        await eventually(lambda: client.connections == 2 and client.state == "connected")
        await deliver_blocks(http, url_of(server), range(2, 3), pause=0)
        expected = await matching_cursors(db, "contract_id = $1", MONSTERS)
        await eventually(lambda: len(recorder.changes) >= len(expected))
        await asyncio.sleep(0.5)
        assert recorder.cursors == expected and len(expected) == 12
        assert client.connections == 2
    finally:
        await client.close()


class SlowStore(MemoryCursorStore):
    """Saves that take a while, as a file on a busy disk does."""

    async def save(self, key: str, cursor: int) -> None:
        await asyncio.sleep(0.3)
        await super().save(key, cursor)


async def test_close_returns_once_the_last_handled_cursor_is_saved(server: TestServer, http: aiohttp.ClientSession,
                                                                     db: asyncpg.Connection) -> None:
    """A clean close and a new client on the same store: exactly once, not the at-least-once of a crash."""
    await deliver_blocks(http, url_of(server), range(1), pause=0)
    store, first = SlowStore(), Recorder()
    client = TimebankClient(url_of(server), store=store)
    await client.start()
    await client.subscribe({}, first, key="bot", since=0)
    await eventually(lambda: len(first.changes) == 5)
    await client.close()  # the last handler has run; its cursor's save has just begun
    assert store.cursors == {"bot": first.cursors[-1]}

    await deliver_blocks(http, url_of(server), range(1, 2), pause=0)
    second = Recorder()
    async with TimebankClient(url_of(server), store=store) as again:
        await again.subscribe({}, second, key="bot", since=0)
        await eventually(lambda: len(second.changes) == 5)
    assert first.cursors + second.cursors == await matching_cursors(db, "true")
