"""Latency of GET /api/events on the generated data, per filter kind and deep into the log.

    .venv/bin/python bench/history_data.py       # once: 1M rows
    .venv/bin/python bench/history_latency.py    # prints a table, writes bench/results/history_latency.json

The real application serves on a loopback port; latency is the server's own time (Server-Timing),
so the client's overhead is not counted. Target: p99 <= 20 ms at limit 100.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from _harness import command_line, serve_on_loopback, server_dsn, write_results

RESULTS = Path(__file__).parent / "results" / "history_latency.json"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def samples(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tx_hash, affected_addresses[1] AS address, contract_id, block_height "
                                "FROM chainhook_events TABLESAMPLE SYSTEM (1) LIMIT 500")
        total = await conn.fetchval("SELECT count(*) FROM chainhook_events")
    finally:
        await conn.close()
    return {"rows": rows, "total": total}


def kinds(sample: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    def pick() -> Any:
        return rng.choice(sample["rows"])

    types = ["print_event", "ft_transfer_event", "contract_call", "stx_lock_event", "nft_mint_event"]
    return {
        "none": lambda: {},
        "contract": lambda: {"contract": pick()["contract_id"]},
        "address": lambda: {"address": pick()["address"]},
        "event_type": lambda: {"event_type": rng.choice(types)},
        "tx_hash": lambda: {"tx_hash": pick()["tx_hash"]},
        "height (10 blocks)": lambda: (lambda h: {"from_height": h, "to_height": h + 10})(pick()["block_height"]),
        "success=false": lambda: {"success": "false"},
        "contract+event_type": lambda: {"contract": pick()["contract_id"], "event_type": rng.choice(types)},
        "address+event_type": lambda: {"address": pick()["address"], "event_type": rng.choice(types)},
        "page 1 (desc)": lambda: {"order": "desc"},
        "page 1000 (asc, after)": lambda: {"after": 999 * 100},
        "page 1000 (desc, before)": lambda: {"order": "desc", "before": sample["total"] - 999 * 100},
    }


async def measure(url: str, params: dict[str, Any], http: aiohttp.ClientSession) -> float:
    async with http.get(url + "/api/events", params={**params, "limit": "100"}) as response:
        await response.read()
        assert response.status == 200, await response.text()
        return float(response.headers["Server-Timing"].split("dur=")[1])


async def run(dsn: str, requests: int) -> dict[str, Any]:
    sample = await samples(dsn)
    rng = random.Random(7)
    figures: dict[str, Any] = {"rows": sample["total"], "requests_per_kind": requests, "kinds": {}}
    async with serve_on_loopback(dsn) as url, aiohttp.ClientSession() as http:
        for name, make in kinds(sample, rng).items():
            for _ in range(10):  # warm the cache the way a running service is warm
                await measure(url, make(), http)
            durations = [await measure(url, make(), http) for _ in range(requests)]
            figures["kinds"][name] = {"p50_ms": round(statistics.median(durations), 2),
                                      "p99_ms": round(percentile(durations, 0.99), 2),
                                      "max_ms": round(max(durations), 2)}
            print(f"{name:<26} p50 {figures['kinds'][name]['p50_ms']:7.2f} ms   "
                  f"p99 {figures['kinds'][name]['p99_ms']:7.2f} ms", flush=True)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench"))
    args = parser.parse_args()
    write_results(RESULTS, asyncio.run(run(server_dsn(args.data_dir), args.requests)))


if __name__ == "__main__":
    main()
