"""Ingest through the webhook vs a raw asyncpg bulk insert of the same rows, in the same run; and the
memory a single very large delivery takes.

    .venv/bin/python bench/ingest.py [--payloads 30] [--events 100 1000] [--large-mb 50]

Ours: ``timebank-realtime serve`` in its own process, sent synthetic Chainhook payloads (v1 and 2.0,
from ``synthetic.py``) on its webhook: JSON parsing, validation, normalization, the delivery
transaction with its change log and cursor, commit; its tailer reads every change back, as in
production. POSTed one at a time, as Chainhook sends them, and also 4 at a time; and one at a time with
``STREAM_DELIVERY_BYTES=0`` (every body parsed while its rows are stored). Reference: the same
normalized rows COPYed by asyncpg into a table with the same columns and indexes, one COPY per
payload, committed. Large: one payload of about ``--large-mb`` MB; the server's peak RSS (VmHWM)
above what it held before, as a multiple of the payload size. Each run uses a fresh database on the
server DATABASE_URL names, else on an embedded PostgreSQL in /tmp/timebank-bench-ingest. Writes
results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import synthetic
from _harness import (
    ROOT,
    command_line,
    fresh_database,
    ours,
    raw_copy_seconds,
    raw_record,
    rss_kb,
    server_dsn,
    write_results,
)

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize

RESULTS = ROOT / "bench" / "results" / "ingest.json"
WEBHOOK = "/api/webhooks/chainhook"


def shape(events: int) -> synthetic.Shape:
    """Transactions of 25 events (plus the contract call row each): ``events`` changes per payload."""
    txs = max(1, events // 26)
    return synthetic.Shape(txs=txs, events=max(1, events // txs - 1), addresses=5000, contracts=50)


async def post_all(url: str, bodies: list[bytes], in_flight: int) -> float:
    """POST every body, ``in_flight`` at a time; seconds until the last is committed."""
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with http.post(url + WEBHOOK, data=body, headers={"content-type": "application/json"}) as r:
                    assert r.status == 200, await r.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - started


async def ours_rate(server: str, name: str, bodies: list[bytes], changes: int, in_flight: int,
                    **settings: str) -> float:
    dsn = await fresh_database(server, name)
    async with ours(dsn, **settings) as service:
        seconds = await post_all(service.url, bodies, in_flight)
    return changes / seconds


async def raw_copy_rate(server: str, name: str, documents: list[dict[str, Any]]) -> float:
    batches = [[raw_record(r, n) for n, r in enumerate(normalize(parse_payload(d)).events, start=1)]
               for d in documents]
    dsn = await fresh_database(server, name)
    async with ours(dsn):  # migrated: the same table definition and indexes to copy
        pass
    return sum(len(b) for b in batches) / await raw_copy_seconds(dsn, batches)


async def throughput(server: str, count: int, sizes: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for events in sizes:
        for fmt in ("v1", "2.0"):
            documents = synthetic.payloads(1_000_000, count, shape(events), "v1" if fmt == "v1" else "2.0")
            changes = sum(len(normalize(parse_payload(d)).events) for d in documents)
            bodies = [json.dumps(d).encode() for d in documents]
            raw = await raw_copy_rate(server, "ingest_raw", documents)
            sequential = await ours_rate(server, "ingest_ours", bodies, changes, 1)
            concurrent = await ours_rate(server, "ingest_ours", bodies, changes, 4)
            # Every body parsed as it is stored (the streamed path), one at a time.
            streamed = await ours_rate(server, "ingest_ours", bodies, changes, 1, STREAM_DELIVERY_BYTES="0")
            row = {"changes_per_payload": changes // count, "raw_copy_events_per_s": round(raw),
                   "ours_events_per_s": round(sequential), "ratio": round(sequential / raw, 2),
                   "ours_4_in_flight_events_per_s": round(concurrent), "ratio_4_in_flight": round(concurrent / raw, 2),
                   "ours_streamed_events_per_s": round(streamed), "ratio_streamed": round(streamed / raw, 2)}
            figures[f"{events}/{fmt}"] = row
            print(f"{events:>5} events/payload {fmt:<3}  raw COPY {raw:>8,.0f}/s  ours {sequential:>8,.0f}/s "
                  f"({sequential / raw:.2f})  4 in flight {concurrent:>8,.0f}/s ({concurrent / raw:.2f})  "
                  f"streamed {streamed:>8,.0f}/s ({streamed / raw:.2f})", flush=True)
    return figures


async def large_delivery(server: str, megabytes: float) -> dict[str, Any]:
    # About 270 bytes of JSON per event with this shape.
    events = int(megabytes * 1_000_000 / 270)
    document = synthetic.payload(9_000_000, synthetic.Shape(txs=max(1, events // 500), events=499,
                                                            addresses=20_000, contracts=50))
    body = json.dumps(document).encode()
    del document
    dsn = await fresh_database(server, "ingest_large")
    async with ours(dsn, MAX_PAYLOAD_BYTES=str(len(body) + 1)) as service:
        await asyncio.sleep(1)
        before = rss_kb(service.pid)
        started = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http, \
                http.post(service.url + WEBHOOK, data=body, headers={"content-type": "application/json"}) as r:
            status, answer = r.status, await r.json()
        seconds = time.perf_counter() - started
        await asyncio.sleep(2)  # the tailer reads the changes back too
        peak = rss_kb(service.pid, "VmHWM")
    growth = (peak - before) * 1024
    figures = {"payload_bytes": len(body), "status": status, "applied": answer.get("applied"),
               "seconds": round(seconds, 1), "rss_before_kb": before, "peak_rss_kb": peak,
               "peak_growth_over_payload": round(growth / len(body), 2)}
    print(f"large: {len(body) / 1e6:.1f} MB, {answer.get('applied')} events, HTTP {status} in {seconds:.1f} s; "
          f"peak RSS grew {growth / 1e6:.0f} MB = {growth / len(body):.1f}x the payload", flush=True)
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = server_dsn(args.data_dir)
    figures: dict[str, Any] = {"throughput": await throughput(server, args.payloads, args.events)}
    if args.large_mb:
        figures["large"] = await large_delivery(server, args.large_mb)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--payloads", type=int, default=30)
    parser.add_argument("--events", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--large-mb", type=float, default=50.0, help="0 to skip")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-ingest"))
    args = parser.parse_args()
    write_results(RESULTS, asyncio.run(run(args)))


if __name__ == "__main__":
    main()
