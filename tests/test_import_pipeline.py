"""The importer's pipeline: lines parsed in worker processes, chunks ahead, stored in file order."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from timebank_realtime import importer
from timebank_realtime.chainhook.normalize import parse_delivery
from timebank_realtime.importer import ImportAborted, ImportProgress, import_files
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter

from .conftest import load_fixture

NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"  # 5 rows


def block(number: int) -> str:
    payload: dict[str, Any] = copy.deepcopy(load_fixture(NFT))
    payload["apply"][0]["block_identifier"] = {"index": 300_000 + number, "hash": f"0x{number:064x}"}
    return json.dumps(payload)


async def run(database_url: str, path: Path, *, abort_on_error: bool = False,
              batch_events: int = 7) -> tuple[ImportProgress, list[str]]:
    skipped: list[str] = []
    pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=5, retry_seconds=5)
    try:
        progress = await import_files(DeliveryWriter(pool), [path], batch_events=batch_events,
                                      abort_on_error=abort_on_error, report=lambda _: None, skipped=skipped.append,
                                      parse_workers=2)
    finally:
        await pool.close()
    return progress, skipped


async def test_lines_parsed_by_other_processes_are_stored_in_file_order(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK_BYTES", 1)  # a chunk per line: many in flight, in two workers
    lines = []
    for number in range(1, 13):
        lines.append(block(number))
        if number % 4 == 0:
            lines += ["{not json", ""]  # a malformed line, then a blank one
    path = tmp_path / "blocks.ndjson"
    path.write_bytes(("\n".join(lines) + "\n").encode())

    progress, skipped = await run(database_url, path)

    assert [message.split(": ")[0] for message in skipped] == [f"{path}:{n}" for n in (5, 11, 17)]
    assert (progress.payloads, progress.applied, progress.bytes_read) == (12, 60, path.stat().st_size)
    heights = [r["block_height"] for r in await db.fetch(
        "SELECT e.block_height FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id "
        'ORDER BY c."cursor"')]
    assert heights == sorted(heights) and len(heights) == 60  # file order is cursor order
    cursors = [r["cursor"] for r in await db.fetch('SELECT "cursor" FROM chainhook_changes ORDER BY 1')]
    assert cursors == list(range(1, 60 + 12 + 1))  # gapless: the rows and their 12 blocks


async def test_an_abort_stores_nothing_of_the_bad_line_s_batch_or_after_it(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK_BYTES", 1)
    path = tmp_path / "blocks.ndjson"
    path.write_bytes(("\n".join([block(1), block(2), block(3), "[1]", block(4), block(5)]) + "\n").encode())

    with pytest.raises(ImportAborted, match=f"{path}:4: "):
        await run(database_url, path, abort_on_error=True, batch_events=10)

    # Blocks 1 and 2 filled a batch and were stored; block 3 waited in the next one, with the bad line.
    assert await db.fetchval("SELECT array_agg(DISTINCT block_height ORDER BY block_height) FROM chainhook_events") \
        == [300_001, 300_002]


ROW_COLUMNS = ("block_hash, tx_hash, event_index, block_height, tx_index, contract_id, event_type, "
               "event_data::text, affected_addresses, success, \"timestamp\", last_cursor, source_format, network")


def awkward_block(number: int) -> str:
    """A block whose print event carries what the careful JSON paths exist for: NUL, a lone surrogate,
    an integer beyond 64 bits, text beyond ASCII."""
    payload: dict[str, Any] = json.loads(block(number))
    data = payload["apply"][0]["transactions"][0]["metadata"]["receipt"]["events"][0]["data"]
    data.update(memo="nul\u0000 \ud800 é", big=2**70, nested={"k\u0000": [2**64, "ü"]})
    return json.dumps(payload)


async def test_rows_parsed_in_workers_are_stored_as_the_webhook_path_stores_them(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers send rows with their data already serialized (and made safe for PostgreSQL).
    monkeypatch.setattr(importer, "CHUNK_BYTES", 1)
    lines = [block(1), awkward_block(2), block(3), awkward_block(4)]
    path = tmp_path / "blocks.ndjson"
    path.write_bytes(("\n".join(lines) + "\n").encode())

    await run(database_url, path, batch_events=3)
    imported = [tuple(r) for r in await db.fetch(f"SELECT {ROW_COLUMNS} FROM chainhook_events ORDER BY last_cursor")]
    await db.execute("TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries;"
                     "UPDATE chainhook_cursor SET last_cursor = 0")
    pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=5, retry_seconds=5)
    try:
        writer = DeliveryWriter(pool)
        for line in lines:
            await writer.apply_delivery(parse_delivery(line.encode()))
    finally:
        await pool.close()
    delivered = [tuple(r) for r in await db.fetch(f"SELECT {ROW_COLUMNS} FROM chainhook_events ORDER BY last_cursor")]

    assert len(imported) == 20 and imported == delivered
    memos = [json.loads(r[7]).get("memo") for r in imported]
    assert memos.count("nul\ufffd ? é") == 2  # NUL and the lone surrogate replaced, as every path does
