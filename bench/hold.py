"""Idle connections held by ``serve --workers N``: more than one process may open (this machine caps
every process at 20,000 open files and a session cannot raise that), in one run.

    .venv/bin/python bench/hold.py [--clients 50000] [--workers 3] [--loaders 3] [--hold 60]

``timebank-realtime serve --workers N`` on a fresh database; ``--loaders`` Node load clients
(loadclient.mjs, socket.io-client 4.8, websocket, subscribed to everything) share the connections,
each over its own loopback source addresses (127.0.0.2 onwards; a source address has about 28,000
ephemeral ports toward one port). Once every client of every loader is connected: the workers' RSS
growth (summed) per connection, and every connection held through ``--hold`` seconds (past a ping
cycle: a loader fails on any disconnect), with the workers' CPU meanwhile. Each loader and the server
raise their own soft open-file limit (never the hard one, never the machine's). Embedded PostgreSQL
in /tmp/timebank-bench-hold unless DATABASE_URL is set. Writes results/hold.json.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from _harness import ROOT, command_line, fresh_database, ours, rss_kb, server_dsn, write_results
from fanout import cpu_seconds, load_config, raise_file_limit, run_load

RESULTS = ROOT / "bench" / "results" / "hold.json"
SOURCES_PER_LOADER = 2  # ~56,000 ports each: a loader's ~17,000 connections fit easily


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


class Rendezvous:
    """The loaders' ``on_ready``: the last one to be ready measures; every one waits for the measure."""

    def __init__(self, loaders: int, measure: Any) -> None:
        self._waiting = loaders
        self._measure = measure
        self._done = asyncio.Event()
        self.figures: dict[str, Any] = {}

    async def ready(self) -> dict[str, Any]:
        self._waiting -= 1
        if self._waiting == 0:
            self.figures = await self._measure()
            self._done.set()
        await self._done.wait()
        return {}


async def run(clients: int, workers: int, loaders: int, hold_seconds: float, data_dir: Path) -> dict[str, Any]:
    per_loader = -(-clients // loaders)
    raise_file_limit(per_loader)
    dsn = await fresh_database(server_dsn(data_dir), "hold")
    async with ours(dsn, WORKERS=str(workers), SLOW_CONSUMER_BACKLOG="100000") as server:
        await asyncio.sleep(3)
        pids = children(server.pid)
        assert len(pids) == workers, f"expected {workers} workers, found {pids}"
        before = sum(rss_kb(pid) for pid in pids)

        async def measure() -> dict[str, Any]:
            await asyncio.sleep(3)
            after = sum(rss_kb(pid) for pid in pids)
            cpu = sum(cpu_seconds(pid) for pid in pids)
            await asyncio.sleep(hold_seconds)
            return {"rss_before_kb": before, "rss_after_kb": after, "rss_after_hold_kb": sum(rss_kb(p) for p in pids),
                    "kb_per_connection": round((after - before) / clients, 2),
                    "cpu_percent_during_hold": round(100 * (sum(cpu_seconds(p) for p in pids) - cpu) / hold_seconds, 1),
                    "per_worker_rss_kb": [rss_kb(pid) for pid in pids]}

        rendezvous = Rendezvous(loaders, measure)
        configs = []
        for number in range(loaders):
            count = min(per_loader, clients - number * per_loader)
            sources = [f"127.0.0.{2 + number * SOURCES_PER_LOADER + s}" for s in range(SOURCES_PER_LOADER)]
            configs.append({**load_config(server, "ours", count, [{}]), "idle": True, "connectConcurrency": 300,
                            "localAddresses": sources})
        reports = await asyncio.gather(*(run_load(config, on_ready=rendezvous.ready) for config in configs))
    held = all(r.get("exit") == 0 and "error" not in r for r in reports)
    figures = {"clients": clients, "workers": workers, "loaders": loaders, "held_seconds": hold_seconds,
               "all_held": held, "connect_seconds": max(r.get("connect_seconds", 0) for r in reports),
               **rendezvous.figures, "loader_reports": reports}
    print(f"{clients:,} idle connections on {workers} workers: {'all held' if held else 'NOT all held'} for "
          f"{hold_seconds:.0f} s; {figures.get('kb_per_connection')} KB RSS per connection (workers summed), "
          f"{figures.get('cpu_percent_during_hold')}% CPU while held; connected in {figures['connect_seconds']} s",
          flush=True)
    if not held:
        print(f"!! {reports}", file=sys.stderr)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--loaders", type=int, default=3)
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-hold"))
    args = parser.parse_args()
    figures = asyncio.run(run(args.clients, args.workers, args.loaders, args.hold, args.data_dir))
    write_results(RESULTS, {"command": " ".join(["bench/hold.py", *sys.argv[1:]]), **figures})
    if not figures["all_held"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
