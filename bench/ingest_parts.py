"""Where a webhook delivery's time goes, in one process: parsing, storing, and the raw COPY of the same rows.

    .venv/bin/python bench/ingest_parts.py [--payloads 30] [--events 100 1000]

For each payload size and format, the same synthetic payloads as ``ingest.py``, timed per row:

- parse: ``parse_delivery`` of the body (JSON, validation, normalization), with the collector paused
  as the webhook does;
- store: ``DeliveryWriter.apply_delivery`` (the delivery's transaction: cursor lock, COPY with the
  records made from the rows, the change log, blocks, cursor, delivery record, NOTIFY, commit),
  split into the COPY and the rest;
- raw COPY: the same rows, serialized before the clock starts, COPYed into a table with the same
  columns and indexes, one committed COPY per payload (the reference of ``ingest.py``).

No HTTP, no tailer, one delivery at a time: the ceiling of the webhook's ratio to the raw COPY is
raw / (parse + store), and raw / store with parsing free. Fresh databases on the server
DATABASE_URL names, else an embedded PostgreSQL in /tmp/timebank-bench-ingest. Writes
results/ingest_parts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import synthetic
from _harness import ROOT, command_line, fresh_database, raw_copy_seconds, raw_record, server_dsn, write_results
from ingest import shape

from timebank_realtime.chainhook.normalize import parse_delivery
from timebank_realtime.collector import collector_paused
from timebank_realtime.settings import DatabaseSettings
from timebank_realtime.store import deliveries
from timebank_realtime.store.db import create_pool
from timebank_realtime.store.deliveries import DeliveryWriter
from timebank_realtime.store.migrate import migrate

RESULTS = ROOT / "bench" / "results" / "ingest_parts.json"


async def migrated_database(server: str, name: str) -> str:
    dsn = await fresh_database(server, name)
    await migrate(dsn, DatabaseSettings(_env_file=None, database_url=dsn))  # type: ignore[call-arg]
    return dsn


async def parts(server: str, bodies: list[bytes]) -> dict[str, float]:
    """Seconds spent parsing, storing and COPYing within storing, over all bodies; and the rows."""
    dsn = await migrated_database(server, "ingest_parts")
    copying = 0.0
    copy_rows = deliveries._copy_rows

    async def timed_copy(conn: Any, records: Any) -> None:
        nonlocal copying
        started = time.perf_counter()
        await copy_rows(conn, records)
        copying += time.perf_counter() - started

    deliveries._copy_rows = timed_copy  # type: ignore[assignment]
    pool = await create_pool(dsn, min_size=1, max_size=1, connect_timeout=10, retry_seconds=10)
    parsing = storing = 0.0
    rows = 0
    try:
        writer = DeliveryWriter(pool)
        for body in bodies:
            started = time.perf_counter()
            with collector_paused():
                delivery = parse_delivery(body)
            parsed = time.perf_counter()
            await writer.apply_delivery(delivery)
            parsing += parsed - started
            storing += time.perf_counter() - parsed
            rows += len(delivery.events)
    finally:
        deliveries._copy_rows = copy_rows  # type: ignore[assignment]
        await pool.close()
    return {"parse": parsing, "store": storing, "copy": copying, "rows": rows}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = server_dsn(args.data_dir)
    figures: dict[str, Any] = {}
    for events in args.events:
        for fmt in ("v1", "2.0"):
            bodies = [json.dumps(d).encode() for d in synthetic.payloads(1_000_000, args.payloads, shape(events), fmt)]
            ours = await parts(server, bodies)
            batches = [[raw_record(r, n) for n, r in enumerate(parse_delivery(b).events, start=1)] for b in bodies]
            raw = await raw_copy_seconds(await migrated_database(server, "ingest_parts_raw"), batches)
            per_row = {name: ours[name] / ours["rows"] * 1e6 for name in ("parse", "store", "copy")}
            raw_per_row = raw / ours["rows"] * 1e6
            row = {"parse_us_per_row": round(per_row["parse"], 1), "store_us_per_row": round(per_row["store"], 1),
                   "store_copy_us_per_row": round(per_row["copy"], 1),
                   "store_rest_us_per_row": round(per_row["store"] - per_row["copy"], 1),
                   "raw_copy_us_per_row": round(raw_per_row, 1),
                   "ceiling": round(raw_per_row / (per_row["parse"] + per_row["store"]), 2),
                   "ceiling_parsing_free": round(raw_per_row / per_row["store"], 2)}
            figures[f"{events}/{fmt}"] = row
            print(f"{events:>5} events/payload {fmt:<3}  µs per row: parse {row['parse_us_per_row']:>6}  store "
                  f"{row['store_us_per_row']:>6} (COPY {row['store_copy_us_per_row']}, rest "
                  f"{row['store_rest_us_per_row']})  raw COPY {row['raw_copy_us_per_row']:>6}  ->  raw / (parse + "
                  f"store) {row['ceiling']:.2f}, raw / store {row['ceiling_parsing_free']:.2f}", flush=True)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--payloads", type=int, default=30)
    parser.add_argument("--events", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-ingest"))
    args = parser.parse_args()
    write_results(RESULTS, asyncio.run(run(args)))


if __name__ == "__main__":
    main()
