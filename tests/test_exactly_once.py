"""One socket, several subscriptions, replays and live changes at once: each subscription gets its
changes exactly once and in order, and the socket gets each change once for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from timebank_realtime.keys import HUB
from timebank_realtime.realtime.subscriptions import parse_filter

from .conftest import Listener, Serve, event_cursors, eventually, post_webhook, settle, url_of
from .expected import MONSTERS
from .payloads import synthetic_payload

OpenListener = Callable[..., Awaitable[Listener]]
OTHER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM.other-contract"


async def expected(db: asyncpg.Connection, since: int, subscription: dict[str, Any]) -> list[int]:
    """Every change after ``since`` whose row the filter matches, in cursor order (matched in Python)."""
    rows = await db.fetch('SELECT c."cursor", e.tx_hash, e.contract_id, e.event_type, e.affected_addresses, e.network, '
                          'e.asset_identifier '
                          'FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id '
                          'WHERE c."cursor" > $1 ORDER BY 1', since)
    wanted = parse_filter({k: v for k, v in subscription.items() if k != "since"})
    return [row["cursor"] for row in rows if wanted.matches(dict(row))]


class ReferenceRouting:
    """The client rules of docs/protocol.md, applied to a socket's timeline with no de-duplication: a
    repeat or a gap shows up in what a subscription is handed."""

    def __init__(self) -> None:
        self.filters: dict[str, Any] = {}
        self.ack_cursor: dict[str, int] = {}
        self.live: set[str] = set()
        self.held: dict[str, list[dict[str, Any]]] = {}
        self.delivered: dict[str, list[int]] = {}

    def run(self, timeline: list[tuple[str, dict[str, Any]]], acks: dict[str, tuple[dict[str, Any], Any]]) -> None:
        for sub_id, (ack, subscription) in acks.items():
            self.filters[sub_id] = parse_filter({k: v for k, v in subscription.items() if k != "since"})
            self.ack_cursor[sub_id] = ack["cursor"]
            self.held[sub_id], self.delivered[sub_id] = [], []
        for kind, message in timeline:
            if kind == "eose":
                self._go_live(message["id"])
            elif kind in ("event", "rollback"):
                self._route(message)

    def _route(self, message: dict[str, Any]) -> None:
        tags = message.get("subscriptions") or ([message["subscription"]] if "subscription" in message else [])
        for sub_id in tags:
            if message["cursor"] <= self.ack_cursor[sub_id]:
                self.delivered[sub_id].append(message["cursor"])
            else:
                self.held[sub_id].append({**message, "tagged": True})
        if tags:
            return
        for sub_id, wanted in self.filters.items():
            if wanted.matches(message) and message["cursor"] > self.ack_cursor[sub_id]:
                if sub_id in self.live:
                    self.delivered[sub_id].append(message["cursor"])
                else:
                    self.held[sub_id].append(message)

    def _go_live(self, sub_id: str) -> None:
        held = [m["cursor"] for m in self.held[sub_id]]
        self.delivered[sub_id].extend(sorted(held))
        self.held[sub_id] = []
        self.live.add(sub_id)


def tags_of(message: dict[str, Any]) -> list[str]:
    return message.get("subscriptions") or ([message["subscription"]] if "subscription" in message else [])


@pytest.mark.parametrize("auth", [None, {"batch": True}], ids=["per-change", "batched"])
async def test_overlapping_replays_and_live_changes_reach_each_subscription_once(
        auth: Any, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    # Small replay batches, so that both replays are still running while live changes arrive.
    server = await serve(replay_batch_size=40, slow_consumer_backlog=100_000)
    for block in range(4):
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(
            100 + block, 300, contract=MONSTERS if block % 2 else OTHER))
        assert status == 200
    # Pushed already: a change pushed after one subscription is made and before the other is would be
    # sent again for the second (it cannot know the first copy counted for it).
    backlog = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == backlog)
    client = await listener(url_of(server), auth=auth)
    firehose = {"since": 0}
    monsters = {"contract": MONSTERS, "since": 0}
    # Sent back to back: the firehose's replay goes through 300 changes of another contract first, so
    # the second subscription is registered long before the replays share anything.
    acks = await asyncio.gather(client.subscribe(firehose), client.subscribe(monsters))
    assert all(ack["ok"] for ack in acks)

    async def deliver_live() -> None:
        for block in range(6):
            status, _ = await post_webhook(http, url_of(server), synthetic_payload(
                200 + block, 15, contract=MONSTERS if block % 2 else OTHER))
            assert status == 200

    await deliver_live()
    events = await event_cursors(db)
    total = events[-1]
    await eventually(lambda: len(client.markers("eose")) == 2, within=30)
    await eventually(lambda: max(client.cursors, default=0) == total, within=30)
    await settle()

    routing = ReferenceRouting()
    routing.run(client.timeline, {acks[0]["id"]: (acks[0], firehose), acks[1]["id"]: (acks[1], monsters)})
    assert routing.delivered[acks[0]["id"]] == await expected(db, 0, firehose)
    assert routing.delivered[acks[1]["id"]] == await expected(db, 0, monsters)
    # Both subscriptions were made before any replay ran: the socket got each change once, and the
    # ones both wanted name both.
    assert sorted(client.cursors) == events
    both = [m["cursor"] for _, m in client.received if tags_of(m) == [acks[0]["id"], acks[1]["id"]]]
    assert both and all("subscription" not in m for _, m in client.received if "subscriptions" in m)


async def test_a_live_change_held_for_two_replays_reaches_both(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    """Live changes that arrive while two subscriptions of a socket replay are held for both. They once
    went out tagged for the one that finished first, and were then dropped for the other."""
    server = await serve(replay_batch_size=20, slow_consumer_backlog=100_000)
    for height, contract in ((300, OTHER), (301, OTHER), (302, MONSTERS)):
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(height, 1500, contract=contract))
        assert status == 200
    backlog = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == backlog)
    client = await listener(url_of(server))
    narrow = {"contract": MONSTERS, "since": 0}
    wide = {"since": 0}
    # The wide one first: its replay reaches the narrow one's changes only after 150 batches, long
    # after the narrow one is registered. The narrow one has less to read and finishes first.
    wide_ack, narrow_ack = await asyncio.gather(client.subscribe(wide), client.subscribe(narrow))
    for height in range(303, 306):
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(height, 5, contract=MONSTERS))
        assert status == 200
    events = await event_cursors(db)
    total = events[-1]
    await eventually(lambda: len(client.markers("eose")) == 2, within=60)
    await eventually(lambda: max(client.cursors, default=0) == total, within=30)
    await settle()
    routing = ReferenceRouting()
    routing.run(client.timeline, {narrow_ack["id"]: (narrow_ack, narrow), wide_ack["id"]: (wide_ack, wide)})
    assert routing.delivered[wide_ack["id"]] == events
    assert routing.delivered[narrow_ack["id"]] == await expected(db, 0, narrow)
    assert sorted(client.cursors) == events


async def test_a_short_replay_does_not_wait_for_a_long_one_on_the_same_socket(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    """Replays far apart take turns: a subscription resuming from a minute ago gets its eose while a
    long replay next to it is still running, and both get exactly their changes."""
    server = await serve(replay_batch_size=10, slow_consumer_backlog=100_000)
    for height in range(500, 504):
        status, _ = await post_webhook(http, url_of(server), synthetic_payload(height, 500, contract=MONSTERS))
        assert status == 200
    head = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: server.app[HUB].cursor == head)
    client = await listener(url_of(server))
    long = {"contract": MONSTERS, "since": 0}
    short = {"since": head - 5}
    long_ack = await client.subscribe(long)
    short_ack = await client.subscribe(short)
    await eventually(lambda: len(client.markers("eose")) == 2, within=60)
    assert [m["id"] for m in client.markers("eose")] == [short_ack["id"], long_ack["id"]]
    routing = ReferenceRouting()
    routing.run(client.timeline, {long_ack["id"]: (long_ack, long), short_ack["id"]: (short_ack, short)})
    assert routing.delivered[short_ack["id"]] == await event_cursors(db, head - 5)
    assert routing.delivered[long_ack["id"]] == await expected(db, 0, long)


async def test_a_storm_of_resuming_clients_waits_for_the_database_instead_of_resyncing(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    """Replays queue for the pool, a few at a time, rather than time out on it with the store healthy."""
    server = await serve(db_pool_max_size=2, db_connect_timeout_seconds=0.3, replay_batch_size=100,
                         slow_consumer_backlog=100_000)
    status, _ = await post_webhook(http, url_of(server), synthetic_payload(400, 300))
    assert status == 200
    events = await event_cursors(db)
    clients = [await listener(url_of(server), auth={"batch": True}) for _ in range(60)]
    acks = await asyncio.gather(*(client.subscribe({"since": 0}) for client in clients))
    assert all(ack["ok"] for ack in acks)
    await eventually(lambda: all(client.markers("eose") for client in clients), within=60)
    assert [client.markers("resync") for client in clients] == [[]] * len(clients)
    assert all(client.cursors == events for client in clients)
