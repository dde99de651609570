"""The chunked COPY of an append: a cancelled or failing delivery leaves no COPY running and nothing stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from timebank_realtime.chainhook.normalize import parse_delivery
from timebank_realtime.chainhook.streaming import stream_rows
from timebank_realtime.events import DeliveryHeader
from timebank_realtime.store import deliveries
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter

from .payloads import synthetic_payload


async def log_state(db: asyncpg.Connection) -> tuple[int, int, int]:
    return (await db.fetchval("SELECT last_cursor FROM chainhook_cursor"),
            await db.fetchval("SELECT count(*) FROM chainhook_events"),
            await db.fetchval("SELECT count(*) FROM chainhook_changes"))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_delivery_cancelled_as_a_copy_starts_waits_for_it_and_stores_nothing(
        streamed: bool, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: a cancel landing while the second chunk's COPY had just started left it running on
    # the connection the transaction then rolled back on (a 503 instead of a cancel, and a stray task).
    unhandled: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
    copy_chunk, chunks = deliveries._copy_chunk, []
    delivery_task: list[asyncio.Future[Any]] = []

    async def cancel_at_the_second_chunk(conn: asyncpg.Connection, records: list[tuple[Any, ...]]) -> None:
        chunks.append(len(records))
        if len(chunks) == 2:
            delivery_task[0].cancel()  # the delivery's task is in the yield that lets this COPY start
        await copy_chunk(conn, records)

    monkeypatch.setattr(deliveries, "_copy_chunk", cancel_at_the_second_chunk)
    pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=5, retry_seconds=5)
    try:
        writer = DeliveryWriter(pool)
        body = json.dumps(synthetic_payload(1000, 1500)).encode()
        before = await log_state(db)
        if streamed:
            header = DeliveryHeader()
            delivery_task.append(asyncio.ensure_future(writer.append_stream(stream_rows(body, header), header)))
        else:
            delivery_task.append(asyncio.ensure_future(writer.apply_delivery(parse_delivery(body))))
        with pytest.raises(asyncio.CancelledError):
            await delivery_task[0]
        await asyncio.sleep(0.2)
        assert chunks == [64, 256]
        assert unhandled == []
        assert await log_state(db) == before
        monkeypatch.setattr(deliveries, "_copy_chunk", copy_chunk)
        result = await writer.apply_delivery(parse_delivery(json.dumps(synthetic_payload(2000, 3)).encode()))
        assert result.applied == 4  # the pool's one connection is healthy
    finally:
        await pool.close()
