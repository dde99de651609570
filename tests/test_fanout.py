"""The fan-out without sockets: routing, replay, hand-off and slow consumers against an in-memory
writer, reading the real log. Nothing runs between two calls unless the test awaits, so each test
places its live changes exactly where it wants them relative to a replay."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.metrics import Metrics
from timebank_realtime.realtime.fanout import Fanout
from timebank_realtime.realtime.sessions import Session, TokenBucket
from timebank_realtime.realtime.subscriptions import SubscriptionRegistry, parse_filter
from timebank_realtime.realtime.tasks import TaskSet
from timebank_realtime.realtime.wire import Link, Outgoing
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter
from timebank_realtime.store.reads import LogReader
from timebank_realtime.tailer import Pushed

from .conftest import eventually, make_settings
from .expected import MONSTERS
from .payloads import synthetic_payload

BLOCK = 31  # rows of a synthetic block of 30 events: the contract call and its events


class EventStore(DeliveryWriter, LogReader):
    """The writer and the log reader over one pool, as the app wires them from its pool."""


class MemoryWriter:
    """What each link was sent, decoded, in order; and how much it has not taken, as a test sets it."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.backlog: dict[str, int] = {}

    def send(self, link: Link, packet: Outgoing) -> bool:
        for one in packet.packets:
            name, message = json.loads(one.encode()[len("42"):])
            self.sent[link.eio_sid].append((name, message))
        return True

    def pending(self, link: Link) -> int:
        return self.backlog.get(link.eio_sid, 0)


class Rig:
    def __init__(self, store: EventStore, **settings: Any) -> None:
        self.store = store
        self.writer = MemoryWriter()
        self.sessions: dict[str, Session] = {}
        self.disconnected: list[str] = []
        self.pushed = Pushed(cursor=0, tip={})
        self.fanout = Fanout(make_settings("postgresql://unused", **settings), Metrics(), self.writer,
                             sessions=self.sessions, registry=SubscriptionRegistry(), tasks=TaskSet(),
                             disconnect=self._disconnect)
        self.fanout.bind(store, self.pushed)
        self._height = 0

    async def _disconnect(self, sid: str) -> None:
        self.disconnected.append(sid)

    def connect(self, sid: str, *, batched: bool = False) -> Session:
        session = Session(sid=sid, grant=None, bucket=TokenBucket.full(10, time.monotonic()),
                          link=Link(sid=sid, eio_sid=sid), batched=batched)
        self.sessions[sid] = session
        return session

    async def deliver(self, blocks: int) -> None:
        for _ in range(blocks):
            self._height += 1
            delivery = normalize(parse_payload(synthetic_payload(self._height, BLOCK - 1)))
            # Events only: the cursor arithmetic below stays that of BLOCK changes a block (the blocks
            # topic is tested through the server in test_blocks.py).
            delivery.blocks = ()
            await self.store.apply_delivery(delivery)

    async def unpushed(self) -> list[dict[str, Any]]:
        return await self.store.changes_after(self.pushed.cursor, 10_000)

    def publish(self, records: list[dict[str, Any]]) -> None:
        """What the tailer does: hand the changes to publish, then move the cursor."""
        self.fanout.publish(records)
        self.pushed.advance(records)

    async def push(self) -> None:
        self.publish(await self.unpushed())

    def changes(self, sid: str) -> list[tuple[int, list[str] | None]]:
        """Each change the socket was sent, with the subscriptions it was tagged for (None: untagged)."""
        out = []
        for name, message in self.writer.sent[sid]:
            if name in ("chainhook:event", "chainhook:rollback"):
                tagged = message.get("subscriptions") or ([message["subscription"]] if "subscription" in message
                                                          else None)
                out.append((message["cursor"], tagged))
        return out

    def markers(self, sid: str, name: str) -> list[dict[str, Any]]:
        return [message for sent, message in self.writer.sent[sid] if sent == f"chainhook:{name}"]


@pytest.fixture
async def store(db: asyncpg.Connection, database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url, min_size=1, max_size=4, connect_timeout=5, retry_seconds=2)
    yield EventStore(pool)
    await pool.close()


async def test_overlapping_replays_and_the_changes_held_meanwhile_reach_the_socket_once_in_order(
        store: EventStore) -> None:
    rig = Rig(store)
    await rig.deliver(3)
    await rig.push()
    await rig.deliver(2)
    live = await rig.unpushed()
    session = rig.connect("s1")
    everything = rig.fanout.subscribe(session, parse_filter({}), since=0)
    recent = rig.fanout.subscribe(session, parse_filter({"contract": MONSTERS}), since=40)
    rig.publish(live)  # two more blocks, before either replay reads a row: held for both
    assert len(session.held) == 2 * BLOCK
    await eventually(lambda: len(rig.markers("s1", "eose")) == 2)

    changes = rig.changes("s1")
    assert [cursor for cursor, _ in changes] == list(range(1, 5 * BLOCK + 1))
    assert all(sorted(tagged or []) == sorted([everything.id] + ([recent.id] if cursor > 40 else []))
               for cursor, tagged in changes)
    names = [name for name, _ in rig.writer.sent["s1"]]
    assert names.index("chainhook:eose") > len(changes) - 1  # both eose after every tagged change
    assert {m["id"]: m["cursor"] for m in rig.markers("s1", "eose")} == {everything.id: 5 * BLOCK,
                                                                      recent.id: 5 * BLOCK}
    assert session.held == {}

    await rig.deliver(1)
    await rig.push()
    assert rig.changes("s1")[len(changes):] == [(cursor, None) for cursor in range(5 * BLOCK + 1, 6 * BLOCK + 1)]


async def test_a_live_subscription_takes_a_change_for_a_replaying_one_untagged(store: EventStore) -> None:
    rig = Rig(store)
    session = rig.connect("s1", batched=True)
    live = rig.fanout.subscribe(session, parse_filter({}), since=None)
    await eventually(lambda: bool(rig.markers("s1", "eose")))
    await rig.deliver(1)
    await rig.push()
    await rig.deliver(1)
    later = await rig.unpushed()
    replaying = rig.fanout.subscribe(session, parse_filter({}), since=0)
    rig.publish(later)  # the live one takes it; the replaying one must not get it again
    await eventually(lambda: len(rig.markers("s1", "eose")) == 2)

    frames = rig.markers("s1", "batch")
    untagged = [c["cursor"] for f in frames if "subscriptions" not in f and "subscription" not in f
                for c in f["changes"]]
    tagged = [c["cursor"] for f in frames if "subscription" in f or "subscriptions" in f for c in f["changes"]]
    assert untagged == list(range(1, 2 * BLOCK + 1))
    assert tagged == list(range(1, BLOCK + 1))  # the replay: only what came before it started
    assert rig.markers("s1", "eose")[0]["id"] == live.id
    assert rig.markers("s1", "eose")[1] == {"id": replaying.id, "cursor": BLOCK}


async def test_a_reader_that_does_not_take_its_messages_is_resynced_from_what_it_was_given(
        store: EventStore) -> None:
    rig = Rig(store, slow_consumer_backlog=10)
    session = rig.connect("s1")
    subscription = rig.fanout.subscribe(session, parse_filter({}), since=None)
    await eventually(lambda: bool(rig.markers("s1", "eose")))
    await rig.deliver(1)
    await rig.push()
    rig.writer.backlog["s1"] = 40  # four times the limit: no grace period
    await rig.deliver(1)
    await rig.push()
    await asyncio.sleep(0)  # the disconnect task

    assert [cursor for cursor, _ in rig.changes("s1")] == list(range(1, BLOCK + 1))
    assert rig.markers("s1", "resync") == [{"cursor": BLOCK, "subscriptions": {subscription.id: BLOCK},
                                            "reason": "the connection fell too far behind"}]
    assert rig.disconnected == ["s1"]
    assert session.resyncing


async def test_live_changes_held_for_a_replay_that_cannot_start_are_bounded(store: EventStore) -> None:
    rig = Rig(store, slow_consumer_backlog=10)
    await rig.deliver(1)
    await rig.push()
    await rig.deliver(2)
    first, second = (await rig.unpushed())[:BLOCK], (await rig.unpushed())[BLOCK:]
    session = rig.connect("s1")
    subscription = rig.fanout.subscribe(session, parse_filter({}), since=0)
    rig.publish(first)  # 31 held: under four times the limit
    assert len(session.held) == BLOCK
    rig.publish(second)  # 62 would be held: the socket is resynced instead
    await asyncio.sleep(0)

    assert rig.changes("s1") == []
    assert rig.markers("s1", "resync") == [{"cursor": 0, "subscriptions": {subscription.id: 0},
                                            "reason": "its replay fell too far behind the live changes"}]
    assert rig.disconnected == ["s1"]
