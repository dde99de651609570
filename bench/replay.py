"""Replay: a 100k-change backlog to one client that subscribes with ``since: 0``, same run as its references.

    .venv/bin/python bench/replay.py [--changes 100000]

Ours: ``timebank-realtime serve`` holding the backlog (ingested through its webhook first); the load
client subscribes ``{"since": 0}`` and the clock runs from the subscribe to ``chainhook:eose``, every
change counted. Twice: with ``auth: {batch: true}`` (frames of REPLAY_BATCH_SIZE changes) and with a
message per change. References: reading the same backlog from PostgreSQL in the same batches with
the store's own query (the most a replay could go), and the Node socket.io broadcaster pushing the
same changes, 500 per POST, to one client. Writes results/replay.json.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from _harness import ROOT, command_line, fresh_database, node_peer, ours, peer, server_dsn, write_results
from fanout import build_workload, run_load, shape_for

from timebank_realtime.store.reads import LogReader

RESULTS = ROOT / "bench" / "results" / "replay.json"
PER_DELIVERY = 1000
BATCH = 500


async def ingest(url: str, bodies: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(url + "/api/webhooks/chainhook", data=body,
                                 headers={"content-type": "application/json"}) as response:
                assert response.status == 200, await response.text()


async def read_from_database(dsn: str, changes: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        log = LogReader(pool)
        started = time.perf_counter()
        cursor, read = 0, 0
        while records := await log.changes_after(cursor, BATCH):
            read += len(records)
            cursor = records[-1]["cursor"]
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    assert read == changes, (read, changes)
    return {"delivered": read, "seconds": seconds, "events_per_second": read / seconds}


async def run(server: str, changes: int) -> dict[str, Any]:
    workload = build_workload(changes // PER_DELIVERY, shape_for(PER_DELIVERY), first_height=5_000_000)
    dsn = await fresh_database(server, "replay")
    figures: dict[str, Any] = {"changes": workload.changes}
    async with ours(dsn, SLOW_CONSUMER_BACKLOG="100000", REPLAY_BATCH_SIZE=str(BATCH)) as service:
        await ingest(service.url, [d["body"] for d in workload.ours])
        for label, batch in (("ours", True), ("ours/single", False)):
            report = await run_load({"url": service.url, "clients": 1, "batch": batch, "filters": [{"since": 0}],
                                     "replay": True, "expectedPerFilter": [workload.changes]})
            figures[label] = report
    figures["database"] = await read_from_database(dsn, workload.changes)
    # The same changes pushed by a plain socket.io server to one client, 500 per POST.
    async with peer("node", node_peer()) as node:
        changes_in_order = [change for d in workload.reference for change in json.loads(d["body"])["changes"]]
        posts = [{"body": json.dumps({"changes": changes_in_order[i:i + BATCH]}), "keys": []}
                 for i in range(0, len(changes_in_order), BATCH)]
        figures["node"] = await run_load({
            "url": node.url, "clients": 1, "batch": False, "filters": [{}], "connectConcurrency": 1,
            "workload": {"publishUrl": node.url + "/publish", "deliveries": posts, "mode": "burst",
                         "timeoutSeconds": 300},
            "expectedPerFilter": [workload.changes]})
    for label in ("ours", "ours/single", "database", "node"):
        report = figures[label]
        print(f"replay {workload.changes:,} changes  {label:<12} {report.get('events_per_second', 0):>10,.0f} "
              f"changes/s  ({report.get('seconds', 0):.2f} s)", flush=True)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-fanout"))
    args = parser.parse_args()
    write_results(RESULTS, asyncio.run(run(server_dsn(args.data_dir), args.changes)))


if __name__ == "__main__":
    main()
