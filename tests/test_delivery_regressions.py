"""Plain regression tests for the two delivery bugs the model (tests/test_delivery_model.py) finds,
with the model's reference client (no dedupe) and checks. Both are driven to the bad interleaving
deterministically: a reader that stops (its proxy paused) holds the server where it must be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from .model_harness import (
    WAIT,
    EventSpec,
    Node,
    RefClient,
    apply_payload,
    block,
    check_client,
    head_cursor,
    pausable_proxy,
    post,
    read_log,
    reset_database,
    until,
)


class World:
    def __init__(self, node: Node, http: aiohttp.ClientSession, dsn: str) -> None:
        self.node, self.http, self.dsn = node, http, dsn
        self.blocks = 0

    async def deliver(self, events: list[EventSpec], padding: int = 0) -> int:
        self.blocks += 1
        await post(self.http, self.node, apply_payload(block(self.blocks, 0, 0, events, padding=padding)))
        head = await head_cursor(self.dsn)
        return head

    async def pushed(self) -> int:
        head = await head_cursor(self.dsn)
        await until(lambda: self.node.hub.cursor >= head, f"the hub to push up to {head}")
        return head

    async def settle(self, client: RefClient) -> None:
        """Every subscription past its eose and everything written to the client handled."""
        await self.pushed()
        await until(lambda: all(s.live for s in client.active_subs()), "every eose")
        await client.barrier()

    async def failures(self, client: RefClient) -> list[str]:
        await self.settle(client)
        _head, log = await read_log(self.dsn)
        found = check_client(client, log)
        return found + (["--- trace:", *client.trace[-40:]] if found else [])


async def _world(dsn: str, **overrides: object) -> AsyncIterator[World]:
    await reset_database(dsn)
    node = await Node(dsn, **overrides).start()
    async with aiohttp.ClientSession() as http:
        try:
            yield World(node, http, dsn)
        finally:
            await node.stop()


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async for item in _world(database_url):
        yield item


@pytest.fixture
async def patient_world(database_url: str) -> AsyncIterator[World]:
    """A server that waits long for a stopped reader (its replay waits for room, no resync)."""
    async for item in _world(database_url, socket_ping_timeout_seconds=30):
        yield item


def _prints(count: int) -> list[EventSpec]:
    return [EventSpec("print", i % 2) for i in range(count)]


@pytest.mark.timeout(60)
async def test_a_held_change_is_not_lost_when_another_subscriptions_replay_sent_it(patient_world: World) -> None:
    """Bug 2. Subscription L (firehose, since=0) replays a long backlog; change X commits meanwhile and
    is held for L; subscription S on the same socket then replays from before X and sends X tagged
    for S. At L's handoff the server skips X ("the socket already had it"), but the client got it
    for S only: L never gets X. (Two ways in on the current code: S's tagged replay and S's eose,
    whose cursor ``_hand_off`` also notes as sent.) The fixed server must also not send X twice on
    the socket: the model's socket check wants one message tagged for both subscriptions."""
    world = patient_world
    await world.deliver(_prints(299), padding=4000)  # 300 changes, about 1.2 MB: more than the buffers take
    await world.pushed()
    proxy = await pausable_proxy(world.node.port)
    client = RefClient("c0", proxy.url, batch=False)
    try:
        await client.connect()
        long = await client.subscribe({}, 0)
        proxy.pause()  # L's replay now waits for room, whatever the machine's speed
        hub = world.node.hub
        session = next(iter(hub.sessions.values()))
        before = await world.deliver([EventSpec("print", 0)])  # X: 2 changes, held for L
        await world.pushed()
        assert long.server_id is not None
        assert not session.subscriptions[long.server_id].live, "L's replay ended before X: nothing tested"
        short = asyncio.create_task(client.subscribe({}, before - 2))  # its ack waits behind the pause
        await until(lambda: len(session.subscriptions) == 2, "the second subscription on the server")
        proxy.resume()
        async with asyncio.timeout(WAIT):
            await short
        assert not (await world.failures(client))
    finally:
        proxy.resume()
        await client.close()
        await proxy.close()


@pytest.mark.timeout(60)
async def test_resuming_from_a_resync_position_misses_nothing(world: World) -> None:
    """Bug 1. A live firehose subscriber stops reading while deliveries stream; the server resyncs it
    while publishing a run of changes. The resync position is computed from the hub cursor, which
    already moved to the end of that run, so resuming from it loses the run's changes."""
    proxy = await pausable_proxy(world.node.port)
    client = RefClient("c0", proxy.url, batch=False)
    try:
        await client.connect()
        await client.subscribe({}, "now")
        hub = world.node.hub
        sid = client.conn.sio.get_sid("/") if client.conn else None
        proxy.pause()
        try:
            for _ in range(10):
                await world.deliver(_prints(59), padding=4000)  # 60 changes: whole tailer runs of 5
                await world.pushed()
                session = hub.sessions.get(sid)
                if session is None or session.resyncing:
                    break
            else:
                pytest.fail("the stopped reader was never resynced")
        finally:
            proxy.resume()
        await until(lambda: not client.connected, "the resynced client to be disconnected")
        assert client.conn is not None and client.conn.resync is not None, "no resync message arrived"
        await client.drop(cut=None)
        await client.resume(from_resync=True)
        assert not (await world.failures(client))
    finally:
        await client.close()
        await proxy.close()
