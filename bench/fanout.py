"""Fan-out: timebank-realtime vs the Node socket.io and stock python-socketio references, same run.

    .venv/bin/python bench/fanout.py                      # everything below, ~10 min
    .venv/bin/python bench/fanout.py --phases burst --clients 1000

Every server runs in its own process; one load client (``loadclient.mjs``, socket.io-client 4.8 in
Node) opens the connections and POSTs the workload, so ours and the references are measured by the
same code. Ours gets Chainhook v1 payloads on its webhook (parsing, normalization, the database
commit and the tailer included); the references get the same changes, as the bodies ours would
send, on ``POST /publish``, and emit each one as its own message. Phases:

- burst: deliveries of ``--events`` changes POSTed back to back; events delivered per second summed
  over all clients, from the first POST to the last arrival; every expected change must arrive.
- paced: deliveries of ``--paced-events`` changes every ``--paced-interval`` ms; latency from the
  start of the POST carrying a change to its arrival, p50/p99 over every (change, client), after
  two untimed warm-up deliveries.
- mixed: ours alone, clients spread over five different subscriptions (burst).
- idle: server RSS per connected, subscribed, idle client; the connections are then held for
  ``--hold`` seconds (past a ping interval) and the run fails if any drops.

Ours runs twice: "ours" with ``auth: {batch: true}`` (one frame per delivery) and "ours/single"
(a message per change, what an unmodified socket.io client gets).

Server CPU (burst and paced): the server process's user + system time (``/proc/PID/stat``) from the
moment every client is connected and subscribed to the last arrival, divided by the changes delivered
(summed over clients): CPU µs per delivered message. One load client saturates on this machine before
the servers do, so delivered rates alone cap out near parity; CPU per message does not depend on
that. Ours' figure is its one process only (not its PostgreSQL) and includes the webhook (parse,
normalize, commit) and the tailer; the references are handed the changes ready to emit. For ours,
also its garbage collections in the same window, in wall and CPU time (``gcprobe/sitecustomize.py``).

Prints a table; writes results/fanout.json. Exits 1 if any run lost or duplicated a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import synthetic
from _harness import (
    ROOT,
    Server,
    command_line,
    fresh_database,
    node_peer,
    ours,
    peer,
    python_peer,
    rss_kb,
    server_dsn,
    write_results,
)

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.realtime.messages import event_message
from timebank_realtime.realtime.subscriptions import parse_filter

RESULTS = ROOT / "bench" / "results" / "fanout.json"
LOADCLIENT = ROOT / "bench" / "loadclient.mjs"
GCPROBE = ROOT / "bench" / "gcprobe"
TARGETS = ["ours", "ours/single", "node", "python"]
WEBHOOK = "/api/webhooks/chainhook"
PACED_WARMUP = 2  # paced deliveries sent first and not timed


@dataclass
class Workload:
    """The same changes, as webhook payloads for ours and as message bodies for the references."""

    ours: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def expected(self, filters: list[dict[str, Any]]) -> list[int]:
        parsed = [parse_filter(f) for f in filters]
        return [sum(1 for row in self.rows if f.matches(row)) for f in parsed]

    @property
    def changes(self) -> int:
        return len(self.rows)


def build_workload(deliveries: int, shape: synthetic.Shape, first_height: int = 2_000_000) -> Workload:
    workload = Workload()
    for document in synthetic.payloads(first_height, deliveries, shape):
        delivery = normalize(parse_payload(document))
        source = {"network": delivery.network, "chainhook_uuid": delivery.chainhook_uuid}
        rows = [{**asdict(row), "id": 0, "cursor": 0, **source,
                 "asset_identifier": asset_of(row.event_type, row.event_data)} for row in delivery.events]
        keys = [f"{row['tx_hash']}:{row['event_index']}" for row in rows]
        workload.ours.append({"body": json.dumps(document), "keys": keys})
        workload.reference.append({"body": json.dumps({"changes": [event_message(r) for r in rows]}), "keys": keys})
        workload.rows.extend(rows)
    return workload


def asset_of(event_type: str, data: dict[str, Any]) -> str | None:
    """The FT/NFT asset the database derives for a row (sql/0004_networks_and_assets.sql)."""
    if not event_type.startswith(("ft_", "nft_")):
        return None
    asset: str | None = data.get("asset_class_identifier") or data.get("asset_identifier")
    return asset


def shape_for(events: int) -> synthetic.Shape:
    """One transaction of ``events - 1`` events: the contract call row makes ``events`` changes."""
    return synthetic.Shape(txs=1, events=events - 1, addresses=5000, contracts=20)


@asynccontextmanager
async def target_server(target: str, server_dsn_: str, gc_probe: Path | None = None) -> AsyncIterator[Server]:
    """``gc_probe``: ours writes its garbage collections there when it exits (gcprobe/sitecustomize.py)."""
    if target.startswith("ours"):
        dsn = await fresh_database(server_dsn_, "fanout")
        probe = {"PYTHONPATH": os.pathsep.join(filter(None, [str(GCPROBE), os.environ.get("PYTHONPATH")])),
                 "GC_PROBE": str(gc_probe)} if gc_probe else {}
        async with ours(dsn, SLOW_CONSUMER_BACKLOG="100000", **probe) as server:
            yield server
    else:
        async with peer(target, node_peer() if target == "node" else python_peer()) as server:
            yield server


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its threads included, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command's closing parenthesis: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / os.sysconf("SC_CLK_TCK")


class ServerMeter:
    """The server's CPU time from the start signal (``start``) to the result (``stop``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = self._wall = 0.0
        self.window = (0.0, 0.0)  # monotonic, from start to stop

    def start(self) -> None:
        self._cpu, self._wall = cpu_seconds(self.pid), time.monotonic()

    def stop(self, delivered: int) -> dict[str, Any]:
        cpu, wall = cpu_seconds(self.pid) - self._cpu, time.monotonic() - self._wall
        self.window = (self._wall, self._wall + wall)
        return {"cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2), "cpu_share": round(cpu / wall, 2),
                "cpu_us_per_message": round(cpu * 1e6 / delivered, 3) if delivered else None}


async def run_load(config: dict[str, Any], on_ready: Any = None, cpu: ServerMeter | None = None) -> dict[str, Any]:
    """Run the load client; ``on_ready`` (async) is called once every client is connected (idle mode).
    With ``cpu``, the workload waits for the meter's start and the report gets ``server_cpu``."""
    if cpu is not None:
        config = {**config, "waitForGo": True}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch)
        if "deliveries" in config.get("workload", {}):
            (path / "deliveries.json").write_text(json.dumps(config["workload"]["deliveries"]))
            config = {**config, "workload": {**config["workload"], "deliveries": str(path / "deliveries.json")}}
        (path / "config.json").write_text(json.dumps(config))
        process = await asyncio.create_subprocess_exec("node", str(LOADCLIENT), str(path / "config.json"),
                                                       stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                       limit=1 << 24)
        assert process.stdout is not None and process.stdin is not None
        report: dict[str, Any] = {}
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "error" in message:
                report["error"] = message["error"]
            elif "ready" in message:
                report["connect_seconds"] = round(message["connect_seconds"], 2)
                if on_ready is not None:
                    report.update(await on_ready())
                    process.stdin.write(b"close\n")
                    await process.stdin.drain()
                elif cpu is not None:
                    cpu.start()
                    process.stdin.write(b"go\n")
                    await process.stdin.drain()
            elif "result" in message:
                report.update(message["result"])
                if cpu is not None:
                    report["server_cpu"] = cpu.stop(message["result"].get("delivered", 0))
        report["exit"] = await process.wait()
        return report


def load_config(server: Server, target: str, clients: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"url": server.url, "clients": clients, "batch": target == "ours", "filters": filters,
            "connectConcurrency": 250}


def deliveries_for(target: str, server: Server, workload: Workload, **options: Any) -> dict[str, Any]:
    if target.startswith("ours"):
        return {"publishUrl": server.url + WEBHOOK, "deliveries": workload.ours, **options}
    return {"publishUrl": server.url + "/publish", "deliveries": workload.reference, **options}


async def burst(dsn: str, target: str, clients: int, workload: Workload,
                filters: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "gc.json"
        async with target_server(target, dsn, probe) as server:
            config = load_config(server, target, clients, filters)
            config["workload"] = deliveries_for(target, server, workload, mode="burst", timeoutSeconds=300)
            config["expectedPerFilter"] = workload.expected(filters)
            report = await run_load(config, cpu=(cpu := ServerMeter(server.pid)))
        return with_gc_probe(report, probe, cpu)


async def paced(dsn: str, target: str, clients: int, workload: Workload, interval_ms: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "gc.json"
        async with target_server(target, dsn, probe) as server:
            config = load_config(server, target, clients, [{}])
            config["workload"] = deliveries_for(target, server, workload, mode="paced", intervalMs=interval_ms,
                                                warmup=PACED_WARMUP, timeoutSeconds=120)
            config["expectedPerFilter"] = workload.expected([{}])
            config["latency"] = True
            report = await run_load(config, cpu=(cpu := ServerMeter(server.pid)))
        return with_gc_probe(report, probe, cpu)


def with_gc_probe(report: dict[str, Any], probe: Path, cpu: ServerMeter) -> dict[str, Any]:
    """Ours' collections during the run, from the probe: per generation, how many, wall and CPU ms (total, max)."""
    if not probe.exists() or "server_cpu" not in report:
        return report
    start, stop = cpu.window
    summary: dict[str, dict[str, float]] = {}
    for generation, started, wall, thread in json.loads(probe.read_text()):
        if start <= started <= stop:
            row = summary.setdefault(str(generation), {"count": 0, "wall_ms": 0.0, "wall_max_ms": 0.0,
                                                       "cpu_ms": 0.0, "cpu_max_ms": 0.0})
            row["count"] += 1
            row["wall_ms"] += wall * 1000
            row["cpu_ms"] += thread * 1000
            row["wall_max_ms"] = max(row["wall_max_ms"], wall * 1000)
            row["cpu_max_ms"] = max(row["cpu_max_ms"], thread * 1000)
    report["server_cpu"]["gc_probe"] = {g: {k: round(v, 2) for k, v in row.items()}
                                        for g, row in sorted(summary.items())}
    return report


def raise_file_limit(clients: int) -> None:
    """Let this process and the servers and load client it starts (which inherit it) hold ``clients``
    sockets each: the soft limit up to the hard one. This process's only, never the machine's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients + 1000
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted,
                                                    hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        print(f"!! the hard limit on open files is {hard}: {clients} connections need about {wanted} in the "
              "server and in the load client; raising it needs CAP_SYS_RESOURCE", file=sys.stderr, flush=True)


def source_addresses(count: int) -> list[str]:
    """127.0.0.2 onwards: loopback source addresses, each with its own ephemeral ports."""
    return [f"127.0.0.{2 + i}" for i in range(count)]


async def idle(dsn: str, target: str, clients: int, hold_seconds: float, sources: int = 0) -> dict[str, Any]:
    async with target_server(target, dsn) as server:
        await asyncio.sleep(2)
        before = rss_kb(server.pid)

        async def measure() -> dict[str, Any]:
            await asyncio.sleep(3)
            after = rss_kb(server.pid)
            cpu = cpu_seconds(server.pid)
            # Held through a ping interval (the load client fails on any disconnect).
            await asyncio.sleep(hold_seconds)
            return {"rss_before_kb": before, "rss_after_kb": after, "held_seconds": hold_seconds,
                    "rss_after_hold_kb": rss_kb(server.pid),
                    # The server's CPU while the connections idle: pings and their answers.
                    "cpu_percent_during_hold": round(100 * (cpu_seconds(server.pid) - cpu) / hold_seconds, 2),
                    "kb_per_connection": round((after - before) / clients, 2)}

        config = {**load_config(server, target, clients, [{}]), "idle": True, "connectConcurrency": 500,
                  "localAddresses": source_addresses(sources)}
        return await run_load(config, on_ready=measure)


def check(report: dict[str, Any], label: str) -> bool:
    ok = report.get("exit") == 0 and "error" not in report
    if not ok:
        print(f"!! {label}: {report}", file=sys.stderr, flush=True)
    return ok


def mixed_filters(workload: Workload) -> list[dict[str, Any]]:
    busiest = max((a for row in workload.rows for a in row["affected_addresses"]),
                  key=lambda a: sum(a in r["affected_addresses"] for r in workload.rows[:2000]))
    return [{}, {"contract": synthetic.contract(0)}, {"address": busiest}, {"event_type": "print_event"},
            {"contract": synthetic.contract(1), "event_type": "ft_transfer_event"}]


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    dsn = server_dsn(args.data_dir)
    figures: dict[str, Any] = {"events_per_delivery": args.events, "targets": TARGETS}
    ok = True
    if "burst" in args.phases:
        figures["burst"] = {}
        for clients in args.clients:
            deliveries = max(2, math.ceil(args.messages / (args.events * clients)))
            workload = build_workload(deliveries, shape_for(args.events))
            row: dict[str, Any] = {"deliveries": deliveries, "changes": workload.changes}
            for target in args.targets:
                report = await burst(dsn, target, clients, workload, [{}])
                ok = check(report, f"burst {target} {clients}") and ok
                row[target] = report
                print(f"burst  {clients:>5} clients  {target:<12} {report.get('events_per_second', 0):>12,.0f} "
                      f"events/s  ({report.get('delivered')}/{report.get('expected')} in "
                      f"{report.get('seconds', 0):.2f} s)  {cpu_line(report)}", flush=True)
            figures["burst"][str(clients)] = row
    if "mixed" in args.phases:
        clients = args.paced_clients
        deliveries = max(2, math.ceil(args.messages / (args.events * clients)))
        workload = build_workload(deliveries, shape_for(args.events), first_height=3_000_000)
        filters = mixed_filters(workload)
        report = await burst(dsn, "ours", clients, workload, filters)
        ok = check(report, "mixed") and ok
        figures["mixed"] = {"clients": clients, "filters": filters, "expected_per_filter": workload.expected(filters),
                            "ours": report}
        print(f"mixed  {clients:>5} clients  ours         {report.get('events_per_second', 0):>12,.0f} events/s",
              flush=True)
    if "paced" in args.phases:
        workload = build_workload(PACED_WARMUP + args.paced_deliveries, shape_for(args.paced_events),
                                  first_height=4_000_000)
        rate = args.paced_events * 1000 / args.paced_interval
        figures["paced"] = {"clients": args.paced_clients, "events_per_second": rate,
                            "messages_per_second": rate * args.paced_clients, "events_per_delivery": args.paced_events}
        for target in args.targets:
            report = await paced(dsn, target, args.paced_clients, workload, args.paced_interval)
            ok = check(report, f"paced {target}") and ok
            figures["paced"][target] = report
            latency = report.get("latency_ms") or {}
            print(f"paced  {args.paced_clients:>5} clients  {target:<12} p50 {latency.get('p50') or 0:>7.1f} ms  "
                  f"p99 {latency.get('p99') or 0:>7.1f} ms  {cpu_line(report)}", flush=True)
    if "idle" in args.phases:
        raise_file_limit(max(args.idle))
        figures["idle"] = {}
        for clients in args.idle:
            row = {}
            for target in [t for t in args.targets if t != "ours/single"]:
                report = await idle(dsn, target, clients, args.hold, args.source_addresses)
                ok = check(report, f"idle {target} {clients}") and ok
                row[target] = report
                print(f"idle   {clients:>5} clients  {target:<12} {report.get('kb_per_connection', 0):>7.1f} KB "
                      f"per connection, {report.get('cpu_percent_during_hold', 0):.1f}% CPU while held", flush=True)
            figures["idle"][str(clients)] = row
    figures["cpu_us_per_message"] = cpu_summary(figures)
    return figures, ok


def cpu_line(report: dict[str, Any]) -> str:
    cpu = report.get("server_cpu") or {}
    if not cpu.get("cpu_us_per_message"):
        return ""
    line = f"server CPU {cpu['cpu_seconds']:.2f} s ({cpu['cpu_share']:.0%} of a core), " \
           f"{cpu['cpu_us_per_message']:.2f} µs/message"
    if cpu.get("gc_probe"):
        line += "; GC CPU " + ", ".join(f"gen{g} {p['count']:.0f}x {p['cpu_ms']:.0f} ms (max {p['cpu_max_ms']:.1f}, "
                                        f"wall max {p['wall_max_ms']:.1f})" for g, p in cpu["gc_probe"].items())
    return line


def cpu_summary(figures: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Server CPU µs per delivered message by run and target, and ours' (both modes) over Node's."""
    runs = {f"burst {clients} clients": row for clients, row in figures.get("burst", {}).items()}
    if "paced" in figures:
        runs[f"paced {figures['paced']['clients']} clients"] = figures["paced"]
    summary: dict[str, dict[str, float | None]] = {}
    for name, row in runs.items():
        values = {t: (row.get(t, {}).get("server_cpu") or {}).get("cpu_us_per_message") for t in TARGETS}
        node = values["node"]
        for t in ("ours", "ours/single"):
            value = values[t]
            values[f"{t} / node"] = round(value / node, 3) if value and node else None
        summary[name] = values
    return summary


def print_table(figures: dict[str, Any]) -> None:
    print("\n| figure | ours | ours/single | node | python | ours / node | ours / python |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    for clients, row in figures.get("burst", {}).items():
        rate = {t: row.get(t, {}).get("events_per_second") for t in TARGETS}
        cells = " | ".join(f"{rate[t]:,.0f}" if rate[t] else "-" for t in TARGETS)
        print(f"| events/s to {clients} clients | {cells} | {ratio(rate['ours'], rate['node'])} | "
              f"{ratio(rate['ours'], rate['python'])} |")
    paced_row = figures.get("paced")
    if paced_row:
        for q in ("p50", "p99"):
            values = {t: (paced_row.get(t, {}).get("latency_ms") or {}).get(q) for t in TARGETS}
            cells = " | ".join(f"{values[t]:.1f} ms" if values[t] is not None else "-" for t in TARGETS)
            print(f"| latency {q} at {paced_row['messages_per_second']:,.0f} msg/s, {paced_row['clients']} clients | "
                  f"{cells} | {ratio(values['ours'], values['node'])} | {ratio(values['ours'], values['python'])} |")
    for clients, row in figures.get("idle", {}).items():
        values = {t: row.get(t, {}).get("kb_per_connection") for t in TARGETS}
        cells = " | ".join(f"{values[t]:.1f} KB" if values[t] is not None else "-" for t in TARGETS)
        print(f"| RSS per idle connection, {clients} | {cells} | {ratio(values['ours'], values['node'])} | "
              f"{ratio(values['ours'], values['python'])} |")
    cpu = figures.get("cpu_us_per_message") or {}
    if cpu:
        print("\n| server CPU µs per delivered message | ours | ours/single | node | python | ours / node | "
              "ours/single / node |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, values in cpu.items():
            cells = " | ".join(f"{values[t]:.2f}" if values[t] else "-" for t in TARGETS)
            ratios = " | ".join(f"{values[k]:.2f}x" if values[k] else "-"
                                for k in ("ours / node", "ours/single / node"))
            print(f"| {name} | {cells} | {ratios} |")


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--phases", nargs="+", default=["burst", "mixed", "paced", "idle"],
                        choices=["burst", "mixed", "paced", "idle"])
    parser.add_argument("--targets", nargs="+", default=TARGETS, choices=TARGETS)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--events", type=int, default=100, help="changes per delivery (burst)")
    parser.add_argument("--messages", type=int, default=400_000, help="messages per burst run, roughly")
    parser.add_argument("--paced-clients", type=int, default=1000)
    parser.add_argument("--paced-events", type=int, default=5)
    parser.add_argument("--paced-interval", type=float, default=1000.0, help="ms between paced deliveries")
    parser.add_argument("--paced-deliveries", type=int, default=20)
    parser.add_argument("--idle", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--hold", type=float, default=30.0, help="seconds idle connections are held (idle)")
    parser.add_argument("--source-addresses", type=int, default=0,
                        help="spread idle clients over this many loopback source addresses (127.0.0.2...): "
                             "past ~28k connections one address runs out of ephemeral ports")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-fanout"))
    args = parser.parse_args()
    figures, ok = asyncio.run(run(args))
    print_table(figures)
    write_results(RESULTS, figures)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
