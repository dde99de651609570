"""``timebank-realtime import`` of generated events vs a raw asyncpg COPY of the same rows, same run.

    .venv/bin/python bench/backfill.py [--events 1000000] [--format v1] [--batch-events 5000]

Ours: the CLI's ``import`` of a newline-delimited file of synthetic Chainhook payloads (one block of
transactions of 25 events each per line, from ``synthetic.py``), into a fresh database: reading,
parsing, validation, normalization, the change log, cursors and blocks, a committed transaction per
``--batch-events`` events, as a backfill runs. Reference: the same normalized rows (parsed before the
clock starts) COPYed by asyncpg into a table with the same columns and indexes
(``LIKE chainhook_events INCLUDING ALL``), one committed COPY per ``--batch-events`` rows. The
database is on the server DATABASE_URL names, else an embedded PostgreSQL in
/tmp/timebank-bench-backfill. Writes results/backfill.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import synthetic
from _harness import ROOT, command_line, fresh_database, raw_copy_seconds, raw_record, server_dsn, write_results

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize

RESULTS = ROOT / "bench" / "results" / "backfill.json"
EVENTS_PER_PAYLOAD = 1000


def payload_lines(events: int, fmt: str) -> Iterator[bytes]:
    """Payloads of about EVENTS_PER_PAYLOAD rows (38 transactions of 25 events and their call row)."""
    shape = synthetic.Shape(txs=38, events=25, addresses=5000, contracts=50)
    payloads = max(1, round(events / (shape.txs * (shape.events + 1))))
    for number in range(payloads):
        yield json.dumps(synthetic.payload(2_000_000 + number, shape, fmt)).encode() + b"\n"


def write_file(path: Path, events: int, fmt: str) -> None:
    with path.open("wb") as out:
        for line in payload_lines(events, fmt):
            out.write(line)


def raw_batches(path: Path, batch_events: int) -> list[list[tuple[Any, ...]]]:
    batches: list[list[tuple[Any, ...]]] = [[]]
    cursor = 0
    with path.open("rb") as lines:
        for line in lines:
            for r in normalize(parse_payload(json.loads(line))).events:
                cursor += 1
                batches[-1].append(raw_record(r, cursor))
                if len(batches[-1]) >= batch_events:
                    batches.append([])
    return [b for b in batches if b]


def migrate(dsn: str) -> None:
    subprocess.run([sys.executable, "-m", "timebank_realtime", "migrate"], check=True, cwd=ROOT,
                   env={**os.environ, "DATABASE_URL": dsn}, stdout=subprocess.DEVNULL)


async def raw_seconds(server: str, batches: list[list[tuple[Any, ...]]]) -> float:
    dsn = await fresh_database(server, "backfill_raw")
    migrate(dsn)  # the same table definition and indexes to copy
    return await raw_copy_seconds(dsn, batches)


async def import_seconds(server: str, path: Path, batch_events: int) -> tuple[float, int]:
    dsn = await fresh_database(server, "backfill_ours")
    migrate(dsn)  # not timed: a backfill into an existing database
    started = time.perf_counter()
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "timebank_realtime", "import", "--batch-events", str(batch_events),
                         str(path)], check=True, cwd=ROOT, env={**os.environ, "DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    conn = await asyncpg.connect(dsn)
    try:
        stored: int = await conn.fetchval("SELECT count(*) FROM chainhook_events")
        logged: int = await conn.fetchval("SELECT count(*) FROM chainhook_changes WHERE event_id IS NOT NULL")
    finally:
        await conn.close()
    assert logged == stored, f"{stored} rows but {logged} logged"
    return seconds, stored


async def run(events: int, fmt: str, batch_events: int, data_dir: Path) -> dict[str, Any]:
    server = server_dsn(data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "payloads.ndjson"
        write_file(path, events, fmt)
        batches = raw_batches(path, batch_events)
        rows = sum(len(b) for b in batches)
        raw = await raw_seconds(server, batches)
        ours, stored = await import_seconds(server, path, batch_events)
        assert stored == rows, f"imported {stored} rows, expected {rows}"
        size = path.stat().st_size
    figures = {"events": rows, "format": fmt, "batch_events": batch_events, "file_mb": round(size / 2**20, 1),
               "raw_copy_seconds": round(raw, 1), "raw_copy_events_per_s": round(rows / raw),
               "import_seconds": round(ours, 1), "import_events_per_s": round(rows / ours),
               "ratio": round(raw / ours, 2)}
    print(f"{rows:,} events ({fmt}, {figures['file_mb']} MB): raw COPY {rows / raw:,.0f}/s ({raw:.1f} s), "
          f"import {rows / ours:,.0f}/s ({ours:.1f} s): {raw / ours:.2f}x the raw COPY", flush=True)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("v1", "2.0"), default="v1")
    parser.add_argument("--batch-events", type=int, default=5000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-backfill"))
    args = parser.parse_args()
    figures = asyncio.run(run(args.events, args.format, args.batch_events, args.data_dir))
    write_results(RESULTS, {"command": " ".join(sys.argv), **figures})


if __name__ == "__main__":
    main()
