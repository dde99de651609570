"""The blocks topic: each block a delivery applies, with its counts, and its rollbacks and restores,
in the log's cursor order, through replay and live, per network, like events."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.chainhook.normalize import parse_delivery
from timebank_realtime.chainhook.streaming import stream_rows
from timebank_realtime.events import DeliveryHeader
from timebank_realtime.importer import import_files
from timebank_realtime.keys import HUB
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter
from timebank_realtime.store.migrate import apply_migrations, load_migrations
from timebank_realtime_client import TimebankClient

from .conftest import Serve, event_cursors, eventually, load_fixture, post_webhook, settle, url_of
from .payloads import synthetic_payload
from .v2_payloads import v2_from_v1

ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"  # mainnet, block 34307
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"   # testnet, block 112195
BLOCK_FIELDS = {"topic", "id", "cursor", "network", "block_height", "block_hash", "timestamp", "transactions",
                "events", "canonical"}


async def block_log(db: asyncpg.Connection) -> list[tuple[int, str, str, bool]]:
    """The block changes of the log: (cursor, change, block hash, canonical now)."""
    rows = await db.fetch('SELECT c."cursor", c.change, b.block_hash, b.canonical FROM chainhook_changes c '
                          'JOIN chainhook_blocks b ON b.id = c.block_id ORDER BY 1')
    return [tuple(r) for r in rows]


def rollback_of(payload: dict[str, Any]) -> dict[str, Any]:
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    return reorg


@pytest.mark.parametrize("name,expected", [
    (ARKADIKO, [(34307, 1, 5)]), (NFT, [(112195, 2, 4)]),
    ("v1-stacks-contract-call-bns-testnet-2023.json", [(6743, 6, 2)]),
    ("v1-stacks-regtest-stx-lock-event.json", [(6, 4, 6)]),
])
def test_a_delivery_summarizes_its_blocks_the_same_whole_streamed_and_in_2_0(
        name: str, expected: list[tuple[int, int, int]]) -> None:
    """(height, transactions sent, events stored): a transaction's own row is not an event."""
    body = json.dumps(load_fixture(name)).encode()
    whole = parse_delivery(body)
    assert [(b.block_height, b.transactions, b.events) for b in whole.blocks] == expected
    assert sum(b.events for b in whole.blocks) == sum(1 for r in whole.distinct_events if r.event_index >= 0)
    header = DeliveryHeader()
    for _row in stream_rows(body, header):
        pass
    assert header.blocks == whole.blocks
    v2 = parse_delivery(json.dumps(v2_from_v1(load_fixture(name))).encode())
    assert [(b.block_height, b.block_hash, b.transactions) for b in v2.blocks] == \
        [(b.block_height, b.block_hash, b.transactions) for b in whole.blocks]


def test_a_block_applied_twice_in_one_delivery_is_summarized_once() -> None:
    payload = load_fixture(NFT)
    payload["apply"].append(copy.deepcopy(payload["apply"][0]))
    assert len(parse_delivery(json.dumps(payload).encode()).blocks) == 1


async def test_blocks_are_logged_after_their_events_and_rolled_back_and_restored_once(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    block = payload["apply"][0]["block_identifier"]["hash"]
    assert (await post_webhook(http, url_of(server), payload))[1]["cursor"] == 6
    assert (await post_webhook(http, url_of(server), payload))[1]["cursor"] is None  # a repeat: nothing
    await post_webhook(http, url_of(server), rollback_of(payload))
    await post_webhook(http, url_of(server), rollback_of(payload))  # nothing still canonical
    await post_webhook(http, url_of(server), payload)
    assert await block_log(db) == [(6, "apply", block, True), (12, "rollback", block, True),
                                   (18, "restore", block, True)]
    stored = await db.fetchrow("SELECT * FROM chainhook_blocks")
    assert (stored["network"], stored["block_height"], stored["transactions"], stored["events"],
            stored["last_cursor"], stored["chainhook_uuid"]) == (
        "testnet", 112195, 2, 4, 18, payload["chainhook"]["uuid"])
    # The log stays gapless: every cursor is an event's or a block's.
    cursors = [r[0] for r in await db.fetch('SELECT "cursor" FROM chainhook_changes ORDER BY 1')]
    assert cursors == list(range(1, 19))


async def test_a_block_moved_by_a_reorg_is_rolled_back_and_its_replacement_applied(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    old = payload["apply"][0]["block_identifier"]["hash"]
    await post_webhook(http, url_of(server), payload)
    fork = copy.deepcopy(payload)
    fork["rollback"] = copy.deepcopy(payload["apply"])
    fork["apply"][0]["block_identifier"]["hash"] = new = "0x" + "ab" * 32
    await post_webhook(http, url_of(server), fork)
    assert await block_log(db) == [(6, "apply", old, False), (12, "rollback", old, False),
                                   (18, "apply", new, True)]


async def test_an_empty_block_is_still_a_block(server: TestServer, http: aiohttp.ClientSession,
                                               db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    payload["apply"][0]["transactions"] = []
    status, body = await post_webhook(http, url_of(server), payload)
    assert (status, body["applied"], body["cursor"]) == (200, 0, 1)
    assert [tuple(r) for r in await db.fetch("SELECT transactions, events FROM chainhook_blocks")] == [(0, 0)]


async def test_blocks_replay_then_eose_then_live_per_network(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: Any) -> None:
    arkadiko, nft = load_fixture(ARKADIKO), load_fixture(NFT)
    await post_webhook(http, url_of(server), arkadiko)      # events 1-6, block 7 (mainnet)
    await post_webhook(http, url_of(server), nft)           # events 8-12, block 13 (testnet)
    await eventually(lambda: server.app[HUB].cursor == 13)
    every = await listener(url_of(server))
    testnet = await listener(url_of(server))
    events = await listener(url_of(server))
    ack = await every.subscribe({"topic": "blocks", "since": 0})
    assert ack["ok"] and ack["filter"] == {"topic": "blocks"}
    assert (await testnet.subscribe({"topic": "blocks", "network": "testnet", "since": 0}))["ok"]
    assert (await events.subscribe({"since": 0}))["ok"]
    for client in (every, testnet, events):
        await eventually(lambda client=client: bool(client.markers("eose")))
    assert [m["cursor"] for m in every.markers("eose")] == [13]
    assert [(k, m["cursor"]) for k, m in every.received] == [("block", 7), ("block", 13)]
    assert [(k, m["cursor"]) for k, m in testnet.received] == [("block", 13)]
    assert events.cursors == await event_cursors(db)  # the events' firehose has no block in it

    block = testnet.received[0][1]
    assert set(block) == BLOCK_FIELDS | {"subscription"}  # replayed: tagged for its subscription
    assert {k: block[k] for k in ("topic", "network", "block_height", "transactions", "events", "canonical")} == {
        "topic": "block", "network": "testnet", "block_height": 112195, "transactions": 2, "events": 4,
        "canonical": True}
    assert block["block_hash"] == nft["apply"][0]["block_identifier"]["hash"]
    assert block["timestamp"] == "2024-11-02T12:36:43+00:00"

    # Live: a rollback of the mainnet block reaches the mainnet audience only, after its events.
    await post_webhook(http, url_of(server), rollback_of(arkadiko))
    await eventually(lambda: len(every.received) == 3 and len(events.received) == 17)
    await settle()
    kind, rollback = every.received[2]
    assert (kind, rollback["cursor"], rollback["canonical"], rollback["network"]) == ("block_rollback", 20, False,
                                                                                      "mainnet")
    assert len(testnet.received) == 1
    assert [k for k, _ in events.received[-6:]] == ["rollback"] * 6


async def test_blocks_come_in_batch_frames_with_their_topic(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: Any) -> None:
    client = await listener(url_of(server), auth={"batch": True})
    assert (await client.subscribe({"topic": "blocks"}))["ok"]
    assert (await client.subscribe({"contract": "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"}))["ok"]
    await eventually(lambda: len(client.markers("eose")) == 2)
    await post_webhook(http, url_of(server), load_fixture(NFT))
    monsters = [r[0] for r in await db.fetch(
        "SELECT last_cursor FROM chainhook_events WHERE contract_id = $1 ORDER BY 1",
        "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters")]
    await eventually(lambda: len(client.received) == len(monsters) + 1)
    frame = client.frames[-1]  # one delivery, one frame: its events, then its block
    assert [(c.get("topic", "event"), c["cursor"]) for c in frame["changes"]] == \
        [("event", n) for n in monsters] + [("block", 6)]


@pytest.mark.parametrize("subscription,code", [
    ({"topic": "block"}, "invalid_topic"),
    ({"topic": 1}, "invalid_topic"),
    ({"topic": "blocks", "contract": "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"}, "invalid_filter"),
    ({"topic": "blocks", "network": ""}, "invalid_network"),
])
async def test_a_bad_blocks_subscription_is_refused(server: TestServer, listener: Any,
                                                    subscription: dict[str, Any], code: str) -> None:
    client = await listener(url_of(server))
    ack = await client.subscribe(subscription)
    assert (ack["ok"], ack["error"]["code"]) == (False, code)


async def test_the_python_client_hands_blocks_to_their_subscription(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve()
    got: dict[str, list[tuple[str, int]]] = {"blocks": [], "events": []}
    client = TimebankClient(url_of(server))
    await client.start()
    try:
        await client.subscribe({"topic": "blocks", "network": "testnet"},
                               lambda change: got["blocks"].append((change.kind, change.cursor)), since=0)
        await client.subscribe({}, lambda change: got["events"].append((change.kind, change.cursor)), since=0)
        for block in range(3):
            await post_webhook(http, url_of(server), synthetic_payload(9000 + block, 2))  # testnet
        await post_webhook(http, url_of(server), load_fixture(ARKADIKO))  # mainnet: not for the blocks subscription
        events = await event_cursors(db)
        await eventually(lambda: len(got["events"]) == len(events))
        await settle()
    finally:
        await client.close()
    blocks = [r[0] for r in await db.fetch(
        'SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_blocks b ON b.id = c.block_id '
        "WHERE b.network = 'testnet' ORDER BY 1")]
    assert got["blocks"] == [("block", c) for c in blocks] and len(blocks) == 3
    assert [c for _, c in got["events"]] == events


async def test_the_migration_knows_the_blocks_of_the_rows_stored_before_it(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS blocks_backfill CASCADE; CREATE SCHEMA blocks_backfill;"
                           "SET search_path TO blocks_backfill")
        migrations = load_migrations()
        await apply_migrations(conn, [m for m in migrations if m.version < 5])
        rows = [("0xa1", "0xb1", -1, True), ("0xa1", "0xb1", 0, True), ("0xa1", "0xb1", 1, True),
                ("0xa2", "0xb1", 2, True), ("0xa3", "0xb2", 0, False)]
        for tx_hash, block_hash, event_index, canonical in rows:
            await conn.execute(
                "INSERT INTO chainhook_events (tx_hash, block_height, block_hash, tx_index, event_index, contract_id, "
                "event_type, event_data, affected_addresses, success, timestamp, source_format, canonical, network) "
                "VALUES ($1, 7, $2, 0, $3, '', 'print_event', '{}', '{}', true, now(), 'v1', $4, 'testnet')",
                tx_hash, block_hash, event_index, canonical)
        await apply_migrations(conn, migrations)
        blocks = await conn.fetch("SELECT block_hash, network, transactions, events, canonical, last_cursor "
                                  "FROM chainhook_blocks ORDER BY block_hash")
        assert [tuple(b) for b in blocks] == [("0xb1", "testnet", 2, 3, True, 0), ("0xb2", "testnet", 1, 1, False, 0)]
        assert await conn.fetchval("SELECT count(*) FROM chainhook_changes") == 0  # nothing to push
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS blocks_backfill CASCADE")
        await conn.close()


async def test_an_import_batch_logs_the_blocks_of_each_of_its_deliveries(
        tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    path = tmp_path / "blocks.ndjson"
    path.write_text("".join(json.dumps(synthetic_payload(9100 + n, 3)) + "\n" for n in range(4)))
    pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=2, retry_seconds=2)
    try:
        await import_files(DeliveryWriter(pool), [path], batch_events=1000, abort_on_error=True,
                           report=lambda _progress: None, skipped=lambda _line: None)
    finally:
        await pool.close()
    heights = [r[0] for r in await db.fetch('SELECT b.block_height FROM chainhook_changes c '
                                            'JOIN chainhook_blocks b ON b.id = c.block_id ORDER BY c."cursor"')]
    assert heights == [9100, 9101, 9102, 9103]
