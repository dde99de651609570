"""What each node tailing the log costs the database, per change: 1, 2, 4, 8 node processes on one
PostgreSQL, each with idle subscribers and one firehose client.

    .venv/bin/python bench/scaling.py [--nodes 1 2 4 8] [--deliveries 50] [--events 100] [--idle 50]

Each step starts ``n`` ``timebank-realtime serve`` processes on one fresh database; each gets
``--idle`` connected clients subscribed to a contract that never occurs and one firehose client that
counts what it receives. Deliveries of ``--events`` events are POSTed to the first node, one at a
time; the step ends when every firehose client has every event. Measured around that: the CPU time
of the PostgreSQL server (the postmaster and all its processes, from /proc: backends, WAL writer,
checkpointer...) and of each node process. Reported per change: the database's CPU, and what each
node beyond the first adds to it (the slope), the nodes' own CPU. Needs the embedded PostgreSQL
(its processes are read from /proc): DATABASE_URL must be unset. Data in /tmp/timebank-bench-scaling.
Writes results/scaling.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio
import synthetic
from _harness import ROOT, command_line, fresh_database, ours, server_dsn, write_results

RESULTS = ROOT / "bench" / "results" / "scaling.json"
WEBHOOK = "/api/webhooks/chainhook"
NOWHERE = "SP000000000000000000002Q6VF78.never-emits"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def postgres_cpu_seconds(postmaster: int) -> float:
    """The postmaster's CPU, its live children's, and its reaped children's (cutime, cstime)."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICKS
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                total += cpu_seconds(int(entry.name))
    return total


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


class Firehose:
    """A client of every event, counting them."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events = 0
        self.expected = 1 << 62  # known once the deliveries are answered
        self.done = asyncio.Event()
        self.sio.on("chainhook:event", self._on_event)

    async def _on_event(self, _message: dict[str, Any]) -> None:
        self.events += 1
        self._check()

    def expect(self, events: int) -> None:
        self.expected = events
        self._check()

    def _check(self) -> None:
        if self.events >= self.expected:
            self.done.set()

    async def start(self, url: str) -> None:
        await self.sio.connect(url, transports=["websocket"])
        ack = await self.sio.call("subscribe", {"since": "now"}, timeout=30)
        assert ack.get("ok"), ack


async def idle_clients(url: str, count: int) -> list[socketio.AsyncClient]:
    clients = []
    for _ in range(count):
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(url, transports=["websocket"])
        ack = await sio.call("subscribe", {"contract": NOWHERE, "since": "now"}, timeout=30)
        assert ack.get("ok"), ack
        clients.append(sio)
    return clients


async def step(server: str, postmaster: int, nodes: int, bodies: list[bytes], idle: int) -> dict[str, Any]:
    dsn = await fresh_database(server, "scaling")
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(ours(dsn)) for _ in range(nodes)]
        firehoses = [Firehose() for _ in servers]
        idlers: list[socketio.AsyncClient] = []
        for server_process, firehose in zip(servers, firehoses, strict=True):
            await firehose.start(server_process.url)
            idlers += await idle_clients(server_process.url, idle)
        await asyncio.sleep(2)  # connections settled
        db_before = postgres_cpu_seconds(postmaster)
        nodes_before = [cpu_seconds(s.pid) for s in servers]
        started = time.perf_counter()
        events = 0
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                async with http.post(servers[0].url + WEBHOOK, data=body,
                                     headers={"content-type": "application/json"}) as response:
                    assert response.status == 200, await response.text()
                    events += (await response.json())["applied"]
        for firehose in firehoses:
            firehose.expect(events)
        with contextlib.suppress(TimeoutError):  # a client short of events fails the assertion below
            await asyncio.wait_for(asyncio.gather(*(f.done.wait() for f in firehoses)), timeout=120)
        seconds = time.perf_counter() - started
        db_cpu = postgres_cpu_seconds(postmaster) - db_before
        node_cpu = [cpu_seconds(s.pid) - before for s, before in zip(servers, nodes_before, strict=True)]
        counts = [f.events for f in firehoses]
        for sio in [*(f.sio for f in firehoses), *idlers]:
            await sio.disconnect()
    assert counts == [events] * nodes, f"firehose clients got {counts}, expected {events} each"
    figures = {"nodes": nodes, "idle_per_node": idle, "changes": events, "seconds": round(seconds, 2),
               "db_cpu_us_per_change": round(db_cpu * 1e6 / events, 1),
               "first_node_cpu_us_per_change": round(node_cpu[0] * 1e6 / events, 1),
               "other_nodes_cpu_us_per_change": round(sum(node_cpu[1:]) * 1e6 / events / max(1, nodes - 1), 1)}
    print(f"{nodes} node(s): database {figures['db_cpu_us_per_change']:>7.1f} µs CPU per change; node taking the "
          f"webhook {figures['first_node_cpu_us_per_change']:>6.1f} µs, each other node "
          f"{figures['other_nodes_cpu_us_per_change']:>6.1f} µs; {seconds:.1f} s", flush=True)
    return figures


async def run(node_counts: list[int], deliveries: int, events_per: int, idle: int, data_dir: Path) -> dict[str, Any]:
    if os.environ.get("DATABASE_URL"):
        raise SystemExit("scaling.py reads the embedded PostgreSQL's processes: unset DATABASE_URL")
    server = server_dsn(data_dir)
    postmaster = postmaster_pid(data_dir)
    shape = synthetic.Shape(txs=max(1, events_per // 26), events=25, addresses=5000, contracts=50)
    documents = synthetic.payloads(5_000_000, deliveries, shape, "v1")
    bodies = [json.dumps(d).encode() for d in documents]
    steps = [await step(server, postmaster, n, bodies, idle) for n in node_counts]
    base = steps[0]
    for s in steps[1:]:
        s["db_cpu_us_per_change_per_added_node"] = round(
            (s["db_cpu_us_per_change"] - base["db_cpu_us_per_change"]) / (s["nodes"] - base["nodes"]), 1)
        print(f"{s['nodes']} nodes: each node beyond {base['nodes']} adds "
              f"{s['db_cpu_us_per_change_per_added_node']} µs of database CPU per change")
    return {"steps": steps}


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--events", type=int, default=100, help="events per delivery (about)")
    parser.add_argument("--idle", type=int, default=50, help="idle subscribed clients per node")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-scaling"))
    args = parser.parse_args()
    figures = asyncio.run(run(args.nodes, args.deliveries, args.events, args.idle, args.data_dir))
    write_results(RESULTS, {"command": "bench/scaling.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "data_dir"), **figures})


if __name__ == "__main__":
    main()
