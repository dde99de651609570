"""Ingest through the webhook vs a raw asyncpg bulk insert of the same rows, in the same run.

    .venv/bin/python bench/ingest.py [--payloads 30] [--events 100 1000]

Ours: synthetic Chainhook v1 payloads POSTed to the real application on a loopback port (JSON parsing,
validation, normalization, the delivery transaction with its log and cursor, commit). Reference:
the same normalized rows COPYed by asyncpg into a table with the same columns and indexes, one
COPY per payload, committed. Each run uses a fresh database on the server DATABASE_URL names, else
on an embedded PostgreSQL in /tmp/timebank-bench-ingest. Prints events/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from _harness import serve_on_loopback, server_dsn, write_results

from timebank_realtime.app import migrate
from timebank_realtime.normalize import normalize
from timebank_realtime.payload import parse_payload
from timebank_realtime.settings import Settings

RESULTS = Path(__file__).parent / "results" / "ingest.json"
COLUMNS = ["tx_hash", "block_height", "block_hash", "tx_index", "event_index", "contract_id", "event_type",
           "event_data", "affected_addresses", "success", "timestamp", "last_cursor", "source_format"]


CONTRACT = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.bench"
SENDER = "SPWKDKPZ3QDPQGDADWJ3EWPAP14CB1N1HDQ897W5"


def _print_value(n: int) -> str:
    """(tuple (kind "vault") (amount u<n>)), serialized."""
    return ("0x0c00000002" + "04" + b"kind".hex() + "0d00000005" + b"vault".hex()
            + "06" + b"amount".hex() + "01" + n.to_bytes(16, "big").hex())


def payload(height: int, events: int) -> dict[str, Any]:
    """A synthetic v1 payload: one block, one contract call, ``events`` print events."""
    receipt = [{"type": "SmartContractEvent", "position": {"index": i},
                "data": {"contract_identifier": CONTRACT, "topic": "print", "raw_value": _print_value(i)}}
               for i in range(events)]
    metadata = {"success": True, "sender": SENDER, "result": "(ok true)", "position": {"index": 0},
                "kind": {"type": "ContractCall", "data": {"contract_identifier": CONTRACT, "method": "go", "args": []}},
                "receipt": {"events": receipt}}
    block = {"block_identifier": {"index": height, "hash": f"0x{height:064x}"},
             "parent_block_identifier": {"index": height - 1, "hash": "0x00"}, "timestamp": 1_730_000_000,
             "transactions": [{"transaction_identifier": {"hash": f"0x{height:064x}"}, "metadata": metadata}]}
    return {"apply": [block], "rollback": [], "chainhook": {"uuid": "bench"}}


async def fresh_database(server_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def ours(dsn: str, bodies: list[bytes], events: int) -> float:
    async with serve_on_loopback(dsn) as url, aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for body in bodies:
            async with http.post(f"{url}/api/webhooks/chainhook", data=body) as response:
                assert response.status == 200, await response.text()
        elapsed = time.perf_counter() - started
    return len(bodies) * (events + 1) / elapsed


async def reference(dsn: str, payloads: list[dict[str, Any]]) -> float:
    records = []
    for document in payloads:
        rows = normalize(parse_payload(document)).events
        records.append([(r.tx_hash, r.block_height, r.block_hash, r.tx_index, r.event_index, r.contract_id,
                         r.event_type, json.dumps(r.event_data), list(r.affected_addresses), r.success, r.timestamp,
                         n, "v1") for n, r in enumerate(rows, start=1)])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE raw_events (LIKE chainhook_events INCLUDING ALL)")
        started = time.perf_counter()
        for batch in records:
            async with conn.transaction():
                await conn.copy_records_to_table("raw_events", records=batch, columns=COLUMNS)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return sum(len(r) for r in records) / elapsed


async def run(server_dsn: str, count: int, sizes: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for events in sizes:
        documents = [payload(1_000_000 + events * 1000 + n, events) for n in range(count)]
        bodies = [json.dumps(d).encode() for d in documents]
        dsn = await fresh_database(server_dsn, f"ingest_{events}")
        await migrate(dsn, Settings(_env_file=None, database_url=dsn))  # type: ignore[call-arg]
        ours_rate = await ours(dsn, bodies, events)
        raw_rate = await reference(dsn, documents)
        figures[str(events)] = {"ours_events_per_s": round(ours_rate), "raw_copy_events_per_s": round(raw_rate),
                                "ratio": round(ours_rate / raw_rate, 2)}
        print(f"{events:>5} events/payload  ours {ours_rate:>9,.0f}/s  raw COPY {raw_rate:>9,.0f}/s  "
              f"ratio {ours_rate / raw_rate:.2f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=30)
    parser.add_argument("--events", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-ingest"))
    args = parser.parse_args()
    write_results(RESULTS, asyncio.run(run(server_dsn(args.data_dir), args.payloads, args.events)))


if __name__ == "__main__":
    main()
