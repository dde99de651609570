"""The change log: cursors are gapless and in commit order, and pushes come from the log."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.keys import TAILER
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter
from timebank_realtime.store.reads import LogReader

from .conftest import Listener, eventually, load_fixture, post_webhook, settle, url_of

OpenListener = Callable[..., Awaitable[Listener]]
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


def block_variant(number: int) -> dict[str, Any]:
    """The NFT fixture moved to its own block: 5 new rows each time."""
    payload = copy.deepcopy(load_fixture(NFT))
    payload["apply"][0]["block_identifier"] = {"index": 200_000 + number, "hash": f"0x{number:064x}"}
    return payload


async def wait_for_count(db: asyncpg.Connection, query: str, expected: int, *, attempts: int = 200) -> None:
    count = None
    for _ in range(attempts):
        count = await db.fetchval(query)
        if count == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{query!r} gave {count}, expected {expected}")


async def test_concurrent_deliveries_never_let_a_reader_skip_a_cursor(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, database_url: str,
        listener: OpenListener) -> None:
    client = await listener(url_of(server))
    await client.subscribe({})
    pool = await create_pool(database_url, min_size=1, max_size=2, connect_timeout=2, retry_seconds=2)
    reader = LogReader(pool)
    observed: list[int] = []
    done = asyncio.Event()

    async def read_like_a_tailer() -> None:
        # Exactly what the tailer does, as fast as it can, while deliveries race each other.
        while not done.is_set() or len(observed) < 240:
            batch = await reader.changes_after(observed[-1] if observed else 0, 1000)
            observed.extend(r["cursor"] for r in batch)
            await asyncio.sleep(0)

    async def deliver(numbers: range) -> None:
        for number in numbers:
            status, _ = await post_webhook(http, url_of(server), block_variant(number))
            assert status == 200

    read_task = asyncio.create_task(read_like_a_tailer())
    await asyncio.gather(*(deliver(range(start, 40, 4)) for start in range(4)))
    done.set()
    await asyncio.wait_for(read_task, 20)
    await pool.close()

    # 40 deliveries x (5 rows and their block): every cursor seen once, in order, with no gap at any read.
    assert observed == list(range(1, 241))
    await eventually(lambda: len(client.received) == 200)
    # The firehose of events: every event's, in order (the blocks are a topic of their own).
    events = [r["last_cursor"] for r in await db.fetch("SELECT last_cursor FROM chainhook_events ORDER BY 1")]
    assert client.cursors == events and len(events) == 200
    # Each delivery's changes are one contiguous run of cursors (one transaction, one block).
    rows = await db.fetch('SELECT c."cursor", e.block_hash FROM chainhook_changes c '
                          'JOIN chainhook_events e ON e.id = c.event_id ORDER BY c."cursor"')
    runs = [rows[i]["block_hash"] for i in range(0, 200, 5)]
    assert all(rows[i]["block_hash"] == runs[i // 5] for i in range(200))
    assert len(set(runs)) == 40


async def test_overlapping_deliveries_take_cursors_in_commit_order(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, database_url: str,
        listener: OpenListener) -> None:
    watcher = await listener(url_of(server))
    await watcher.subscribe({})
    # Hold the cursor row: both deliveries open their transaction and queue for it.
    blocker = await asyncpg.connect(database_url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("SELECT * FROM chainhook_cursor FOR UPDATE")
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    first = asyncio.create_task(post_webhook(http, url_of(server), block_variant(1)))
    await wait_for_count(db, waiting, 1)
    second = asyncio.create_task(post_webhook(http, url_of(server), block_variant(2)))
    await wait_for_count(db, waiting, 2)
    # Nothing is visible while both wait: no cursor, no half-written delivery, and no push.
    assert await db.fetchval("SELECT count(*) FROM chainhook_changes") == 0
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == 0
    await settle()
    assert watcher.received == []
    await transaction.rollback()
    await blocker.close()
    results = await asyncio.gather(first, second)
    assert sorted(body["cursor"] for _, body in results) == [6, 12]  # each: 5 rows, then its block
    log = await db.fetch('SELECT c."cursor", c.committed_at, e.block_hash FROM chainhook_changes c '
                         'JOIN chainhook_events e ON e.id = c.event_id ORDER BY c."cursor"')
    assert len({r["block_hash"] for r in log[:5]}) == 1
    assert len({r["block_hash"] for r in log[5:]}) == 1
    assert log[0]["block_hash"] != log[5]["block_hash"]
    await eventually(lambda: len(watcher.received) == 10)
    assert watcher.cursors == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]


async def test_a_commit_no_request_handler_saw_is_still_pushed(
        server: TestServer, db: asyncpg.Connection, database_url: str, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    await client.subscribe({"event_type": "nft_mint_event"})
    # Write straight to the store, as another node (or a crashed one) would: only the log knows.
    pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=2, retry_seconds=2)
    result = await DeliveryWriter(pool).apply_delivery(normalize(parse_payload(load_fixture(NFT))))
    await pool.close()
    assert result.applied == 5
    await eventually(lambda: len(client.received) == 1)
    assert client.received[0][1]["cursor"] == 2


async def test_tailer_recovers_when_its_listen_connection_is_killed(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    await client.subscribe({})
    # The tailer connects in the background after start-up: its LISTEN may not be issued yet.
    await eventually(lambda: server.app[TAILER].listening)
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()")
    assert killed >= 1
    # Deliver at once: the notification for this commit may well go nowhere.
    status, _ = await post_webhook(http, url_of(server), load_fixture(NFT))
    assert status == 200
    await eventually(lambda: len(client.received) == 5)
    await settle()
    assert client.cursors == [1, 2, 3, 4, 5]
    # And it listens again.
    await wait_for_count(db, "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %'", 1)


async def test_every_logged_change_names_a_stored_event_and_events_cannot_be_deleted(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    # The log has no foreign key to the events (it cost a lookup per change on ingest). Through an
    # apply, a reorg that rolls the block back and applies another, and the first block again:
    first, second = block_variant(1), block_variant(2)
    reorg = copy.deepcopy(second)
    reorg["rollback"] = copy.deepcopy(first["apply"])
    back = copy.deepcopy(first)
    back["rollback"] = copy.deepcopy(second["apply"])
    for payload in (first, reorg, back):
        status, _ = await post_webhook(http, url_of(server), payload)
        assert status == 200
    changes = await db.fetch("SELECT change, count(*) AS n FROM chainhook_changes WHERE event_id IS NOT NULL "
                             "GROUP BY change")
    assert {r["change"]: r["n"] for r in changes} == {"apply": 10, "rollback": 10, "restore": 5}
    assert await db.fetchval(
        "SELECT count(*) FROM chainhook_changes c WHERE c.event_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM chainhook_events e WHERE e.id = c.event_id)") == 0
    # And none can go missing later: deleting events is refused, whatever the statement matches.
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute("DELETE FROM chainhook_events WHERE block_hash = $1", f"0x{1:064x}")
    with pytest.raises(asyncpg.RestrictViolationError):
        await db.execute("DELETE FROM chainhook_events WHERE false")
    with pytest.raises(asyncpg.RestrictViolationError, match="truncated with chainhook_changes"):
        await db.execute("TRUNCATE chainhook_events")
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == 10
    # With the log, as the foreign key allowed:
    await db.execute("TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks")
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == 0
