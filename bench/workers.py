"""Fan-out with ``serve --workers 1`` vs ``--workers 2``: the same workload, the same load client, same run.

    .venv/bin/python bench/workers.py                     # 3 rounds of 1 and 2 workers, ~3 min
    .venv/bin/python bench/workers.py --rounds 5 --clients 1000 --single

Ours alone, on a fresh database each time, with ``WORKERS`` set; the load client (``loadclient.mjs``,
socket.io-client in Node, websocket) opens ``--clients`` connections, which the kernel spreads over
the workers, subscribes each to everything and POSTs the deliveries back to back (to whichever worker
its HTTP connection landed on: every worker pushes every change from the log). Figure: events
delivered per second summed over all clients, from the first POST to the last arrival, as in
``fanout.py``'s burst. Rounds alternate 1 and 2 workers so that a machine getting busier or quieter
affects both. The load client runs on the same machine and competes with the workers for its cores.
Prints each run and the range per worker count; writes results/workers.json (workers-single.json
with ``--single``).
Exits 1 if any run lost or duplicated a change.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path
from typing import Any

from _harness import ROOT, command_line, fresh_database, ours, server_dsn, write_results
from fanout import Workload, build_workload, check, deliveries_for, load_config, run_load, shape_for

RESULTS = ROOT / "bench" / "results" / "workers.json"


async def burst(dsn: str, workers: int, clients: int, workload: Workload, single: bool) -> dict[str, Any]:
    database = await fresh_database(dsn, "workers")
    async with ours(database, WORKERS=str(workers), SLOW_CONSUMER_BACKLOG="100000") as server:
        # ours() is ready once one worker answers; give the others time to listen too.
        await asyncio.sleep(3)
        target = "ours/single" if single else "ours"
        config = load_config(server, target, clients, [{}])
        config["workload"] = deliveries_for(target, server, workload, mode="burst", timeoutSeconds=300)
        config["expectedPerFilter"] = workload.expected([{}])
        return await run_load(config)


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    dsn = server_dsn(args.data_dir)
    deliveries = max(2, math.ceil(args.messages / (args.events * args.clients)))
    workload = build_workload(deliveries, shape_for(args.events))
    figures: dict[str, Any] = {"clients": args.clients, "events_per_delivery": args.events,
                               "deliveries": deliveries, "changes": workload.changes,
                               "mode": "single" if args.single else "batch", "runs": {"1": [], "2": []}}
    ok = True
    for round_ in range(1, args.rounds + 1):
        for workers in (1, 2):
            report = await burst(dsn, workers, args.clients, workload, args.single)
            ok = check(report, f"round {round_}, {workers} worker(s)") and ok
            rate = report.get("events_per_second", 0)
            figures["runs"][str(workers)].append(rate)
            print(f"round {round_}  {workers} worker(s)  {rate:>12,.0f} events/s  "
                  f"({report.get('delivered')}/{report.get('expected')} in {report.get('seconds', 0):.2f} s)",
                  flush=True)
    return figures, ok


def print_summary(figures: dict[str, Any]) -> None:
    print(f"\n{figures['clients']} clients, {figures['changes']:,} changes in {figures['deliveries']} deliveries, "
          f"{figures['mode']} frames")
    print("| workers | events/s, each run | min | max |")
    print("| ---: | --- | ---: | ---: |")
    for workers, rates in figures["runs"].items():
        if rates:
            print(f"| {workers} | {', '.join(f'{r:,.0f}' for r in rates)} | {min(rates):,.0f} | {max(rates):,.0f} |")
    one, two = figures["runs"]["1"], figures["runs"]["2"]
    if one and two:
        ratios = [b / a for a, b in zip(one, two, strict=True) if a]
        if ratios:
            print(f"2 workers / 1, per round: {', '.join(f'{r:.2f}x' for r in ratios)}")


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each worker count, alternating")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100, help="changes per delivery")
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages per run, roughly")
    parser.add_argument("--single", action="store_true",
                        help="a message per change (an unmodified socket.io client), not a frame per delivery")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-workers"))
    args = parser.parse_args()
    figures, ok = asyncio.run(run(args))
    print_summary(figures)
    write_results(RESULTS.with_name("workers-single.json") if args.single else RESULTS, figures)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
