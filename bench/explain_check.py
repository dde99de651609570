"""EXPLAIN every filter combination GET /api/events offers, on the generated data: no sequential scans,
none over 20 ms.

    .venv/bin/python bench/history_data.py        # once: 1M rows
    .venv/bin/python bench/explain_check.py       # exits 1 if any plan scans the table or takes over 20 ms
    .venv/bin/python bench/explain_check.py --warm  # each query run once untimed first

Runs the exact SQL the API runs (store.reads.events_page_sql), for all 64 combinations of the six filters,
in both orders, first page and deep into the log; prints each plan's access path and timing, then the
distribution of the execution times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
from _harness import command_line, server_dsn

from timebank_realtime.events import EventQuery
from timebank_realtime.store.reads import events_page_sql

FILTERS: dict[str, dict[str, Any]] = {
    "contract": {"contract": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.contract-17"},
    "address": {"address": "address"},  # replaced by a real address from the data
    "event_type": {"event_types": ("ft_mint_event",)},
    "tx_hash": {"tx_hash": "tx"},  # replaced by a real transaction hash
    "height": {"from_height": 120_000, "to_height": 130_000},
    "success": {"success": False},
}
LIMIT_MS = 20.0


class Outcome(NamedTuple):
    sequential: int  # plans with a sequential scan
    times_ms: list[float]  # each plan's execution time

    @property
    def slow(self) -> int:
        return sum(t > LIMIT_MS for t in self.times_ms)


def access_paths(plan: dict[str, Any]) -> list[str]:
    found = [f"{plan['Node Type']}({plan.get('Index Name', plan.get('Relation Name', ''))})"]
    for child in plan.get("Plans", []):
        found += access_paths(child)
    return [p for p in found if "Scan" in p]


async def check(dsn: str, warm: bool) -> Outcome:
    conn = await asyncpg.connect(dsn)
    failures = 0
    times: list[float] = []
    try:
        rows = await conn.fetchval("SELECT count(*) FROM chainhook_events")
        sample = await conn.fetchrow("SELECT tx_hash, affected_addresses[1] AS address FROM chainhook_events "
                                     "WHERE id = 500000")
        FILTERS["address"] = {"address": sample["address"]}
        FILTERS["tx_hash"] = {"tx_hash": sample["tx_hash"]}
        print(f"{rows} events; {2 ** len(FILTERS) * 4} plans\n")
        for size in range(len(FILTERS) + 1):
            for names in itertools.combinations(FILTERS, size):
                for order, position in itertools.product(("asc", "desc"), ("first", "deep")):
                    fields: dict[str, Any] = {k: v for name in names for k, v in FILTERS[name].items()}
                    if position == "deep":
                        fields["after" if order == "asc" else "before"] = rows * 9 // 10 if order == "asc" \
                            else rows // 10
                    sql, *arguments = events_page_sql(EventQuery(order="asc" if order == "asc" else "desc", **fields))
                    if warm:  # once untimed: its pages in the cache, as in a service that answers it often
                        await conn.fetch(sql, *arguments)
                    explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *arguments)
                    plan = json.loads(explained)[0]
                    paths = access_paths(plan["Plan"])
                    sequential = [p for p in paths if p.startswith("Seq Scan")]
                    failures += bool(sequential)
                    times.append(plan["Execution Time"])
                    bad = sequential or plan["Execution Time"] > LIMIT_MS
                    print(f"{'FAIL' if bad else 'ok  '} {'+'.join(names) or '(none)':<45} {order:<4} "
                          f"{position:<5} {plan['Execution Time']:8.2f} ms  {', '.join(paths)}")
    finally:
        await conn.close()
    outcome = Outcome(failures, times)
    print(f"\n{failures} plan(s) with a sequential scan")
    print(f"{outcome.slow} plan(s) over {LIMIT_MS:g} ms of {len(times)}; execution time " + summary(times))
    return outcome


def summary(times: list[float]) -> str:
    ordered = sorted(times)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return (f"p50 {at(0.5):.2f} ms, p90 {at(0.9):.2f} ms, p99 {at(0.99):.2f} ms, max {ordered[-1]:.2f} ms; "
            f"over 5 ms: {sum(t > 5 for t in times)}, over 10 ms: {sum(t > 10 for t in times)}")


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--warm", action="store_true", help="run each query once before timing it (default: "
                        "time its first run, pages as the previous queries left the cache)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench"))
    args = parser.parse_args()
    dsn = server_dsn(args.data_dir)
    outcome = asyncio.run(check(dsn, args.warm))
    sys.exit(1 if outcome.sequential or outcome.slow else 0)


if __name__ == "__main__":
    main()
