"""Reconnect storm: K clients that all resume from ``since: 0`` at the same moment, on a backlog.

    .venv/bin/python bench/replay_storm.py [--clients 500] [--changes 20000]

Ours: ``timebank-realtime serve`` on a loopback port against a fresh database, with its default
settings (DB_POOL_MAX_SIZE, DB_CONNECT_TIMEOUT_SECONDS, REPLAY_BATCH_SIZE, SLOW_CONSUMER_BACKLOG are
not overridden; the ones that matter are printed). The backlog is ingested through its webhook first
(the same generated deliveries as replay.py, 1,000 changes each). Then ``--clients`` python-socketio
AsyncClient connections (websocket, ``auth={"batch": True}``, all in this process) are opened,
``--connect-concurrency`` at a time; once every one is connected they ALL send
``subscribe {"since": 0}`` together. Per client: ``chainhook:eose`` with how many changes came before
it (must be the whole backlog), or ``chainhook:resync`` with its ``reason``, or neither (refused
subscribe, disconnected, or still waiting at the deadline). Prints the counts and the time from the
subscribe burst to the last eose; writes results/replay_storm.json. Exits 1 unless every client got
its eose after exactly the whole backlog. Everything is bounded by ``--timeout`` (300 s).

Against other server code (e.g. an old commit): run this file with that checkout's interpreter from
inside that checkout, so that ``_harness`` and ``timebank_realtime`` (and so the server it starts,
``python -m timebank_realtime serve``) are that checkout's:

    git worktree add /tmp/wt-old 0e7f0d7 && cd /tmp/wt-old && python -m venv .venv && .venv/bin/pip install -e .
    cp /work/main/bench/replay_storm.py bench/ && .venv/bin/python bench/replay_storm.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import socketio
from _harness import ROOT, command_line, fresh_database, ours, server_dsn, write_results
from fanout import build_workload, shape_for

from timebank_realtime.settings import Settings

RESULTS = ROOT / "bench" / "results" / "replay_storm.json"
PER_DELIVERY = 1000
WEBHOOK = "/api/webhooks/chainhook"


class _Json:
    """What python-socketio decodes packets with: orjson (a dependency of the server), so that 500
    clients in one Python process can keep up with the frames; the standard library for the rest."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(text: str | bytes, **_options: Any) -> Any:
        return orjson.loads(text)


class Client:
    """One resuming connection and what it got."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.sio = socketio.AsyncClient(reconnection=False, json=_Json)
        self.changes = 0
        self.outcome = "pending"  # eose | resync | refused | disconnected | connect_failed | pending
        self.reason: str | None = None
        self.seconds: float | None = None  # from the subscribe burst to eose / resync
        self.done = asyncio.get_running_loop().create_future()
        self.started = 0.0
        self.sio.on("chainhook:batch", self._on_batch)
        self.sio.on("chainhook:event", self._on_one)
        self.sio.on("chainhook:rollback", self._on_one)
        self.sio.on("chainhook:eose", self._on_eose)
        self.sio.on("chainhook:resync", self._on_resync)
        self.sio.on("disconnect", self._on_disconnect)

    def _finish(self, outcome: str, reason: str | None = None) -> None:
        if self.done.done():
            return
        self.outcome, self.reason = outcome, reason
        self.seconds = time.perf_counter() - self.started if self.started else None
        self.done.set_result(None)

    async def _on_batch(self, frame: dict[str, Any]) -> None:
        self.changes += len(frame.get("changes", ()))

    async def _on_one(self, _message: dict[str, Any]) -> None:
        self.changes += 1

    async def _on_eose(self, _message: dict[str, Any]) -> None:
        self._finish("eose")

    async def _on_resync(self, message: dict[str, Any]) -> None:
        self._finish("resync", str(message.get("reason")))

    async def _on_disconnect(self, *reason: Any) -> None:
        self._finish("disconnected", f"{reason[0]} after {self.changes} changes" if reason else None)

    async def subscribe(self, started: float) -> None:
        self.started = started
        try:
            ack = await self.sio.call("subscribe", {"since": 0}, timeout=60)
        except Exception as error:  # a refused or lost subscribe is a figure, not a crash
            self._finish("refused", f"{type(error).__name__}: {error}")
            return
        if not (isinstance(ack, dict) and ack.get("ok")):
            self._finish("refused", str(ack.get("error") if isinstance(ack, dict) else ack))


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files (inherited by the server it starts), never the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def ingest(url: str, bodies: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(url + WEBHOOK, data=body, headers={"content-type": "application/json"}) as response:
                assert response.status == 200, await response.text()


async def connect_all(url: str, clients: list[Client], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            try:
                await client.sio.connect(url, transports=["websocket"], auth={"batch": True}, wait_timeout=30)
            except Exception as error:
                client._finish("connect_failed", f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(c) for c in clients))


async def disconnect_all(clients: list[Client]) -> None:
    gate = asyncio.Semaphore(100)

    async def one(client: Client) -> None:
        async with gate:
            try:
                async with asyncio.timeout(10):
                    await client.sio.disconnect()
            except Exception:  # closing at the end; nothing left to measure
                pass

    await asyncio.gather(*(one(c) for c in clients))


def remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


async def run(server: str, args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    workload = build_workload(args.changes // PER_DELIVERY, shape_for(PER_DELIVERY), first_height=5_000_000)
    backlog = workload.changes
    dsn = await fresh_database(server, "replay_storm")
    # What the server reads (same environment, same working directory), nothing overridden.
    settings = Settings(database_url=dsn)  # type: ignore[call-arg]
    server_settings = {
        "DB_POOL_MAX_SIZE": settings.db_pool_max_size,
        "DB_CONNECT_TIMEOUT_SECONDS": settings.db_connect_timeout_seconds,
        "REPLAY_BATCH_SIZE": settings.replay_batch_size,
        "SLOW_CONSUMER_BACKLOG": settings.slow_consumer_backlog,
        "SOCKET_PING_TIMEOUT_SECONDS": settings.socket_ping_timeout_seconds,
    }
    figures: dict[str, Any] = {"clients": args.clients, "backlog": backlog, "server_settings": server_settings,
                               "server_package": str(Path(sys.modules[Settings.__module__].__file__ or "").parent)}
    async with ours(dsn) as service:
        started = time.perf_counter()
        await asyncio.wait_for(ingest(service.url, [d["body"] for d in workload.ours]), remaining(deadline))
        figures["ingest_seconds"] = round(time.perf_counter() - started, 2)

        clients = [Client(i) for i in range(args.clients)]
        try:
            started = time.perf_counter()
            await asyncio.wait_for(connect_all(service.url, clients, args.connect_concurrency), remaining(deadline))
            figures["connect_seconds"] = round(time.perf_counter() - started, 2)
            connected = [c for c in clients if c.sio.connected and not c.done.done()]
            figures["connected"] = len(connected)

            # The storm: every connected client subscribes from 0 in the same loop iteration.
            burst = time.perf_counter()
            await asyncio.gather(*(c.subscribe(burst) for c in connected))
            with_future = [c.done for c in connected]
            if with_future:
                await asyncio.wait(with_future, timeout=remaining(deadline))
            for client in connected:  # still replaying at the deadline (not our disconnect below)
                client._finish("pending", f"at the deadline after {client.changes} changes")
        finally:
            await disconnect_all(clients)

    outcomes = collections.Counter(c.outcome for c in clients)
    complete = [c for c in clients if c.outcome == "eose" and c.changes == backlog]
    short = [c for c in clients if c.outcome == "eose" and c.changes != backlog]
    resync_reasons = collections.Counter(c.reason for c in clients if c.outcome == "resync")
    other = collections.Counter(f"{c.outcome}: {c.reason}" if c.reason else c.outcome
                                for c in clients if c.outcome not in ("eose", "resync"))
    eose_times = sorted(c.seconds for c in clients if c.outcome == "eose" and c.seconds is not None)
    resync_times = sorted(c.seconds for c in clients if c.outcome == "resync" and c.seconds is not None)
    figures.update({
        "completed": len(complete),
        "eose_with_wrong_count": [{"client": c.index, "changes": c.changes} for c in short],
        "resynced": sum(resync_reasons.values()),
        "resynced_by_reason": dict(resync_reasons),
        "other_outcomes": dict(other),
        "outcomes": dict(outcomes),
        "seconds_to_last_eose": round(eose_times[-1], 2) if eose_times else None,
        "seconds_to_first_eose": round(eose_times[0], 2) if eose_times else None,
        "seconds_to_median_eose": round(statistics.median(eose_times), 2) if eose_times else None,
        "seconds_to_first_resync": round(resync_times[0], 2) if resync_times else None,
        "seconds_to_last_resync": round(resync_times[-1], 2) if resync_times else None,
        "changes_delivered": sum(c.changes for c in clients),
    })
    print(f"replay storm: {args.clients} clients x backlog {backlog:,} changes (since 0, batch frames)")
    print("server settings: " + ", ".join(f"{k}={v}" for k, v in server_settings.items()))
    print(f"server package: {figures['server_package']}")
    print(f"ingest {figures['ingest_seconds']} s; connect {figures.get('connect_seconds')} s "
          f"({figures.get('connected')} connected, {args.connect_concurrency} at a time)")
    print(f"completed (eose after all {backlog:,}): {len(complete)} / {args.clients}")
    if short:
        print(f"eose after a wrong count: {len(short)}  e.g. {figures['eose_with_wrong_count'][:5]}")
    print(f"resynced: {figures['resynced']}")
    for reason, count in resync_reasons.most_common():
        print(f"    {count:>5}  {reason}")
    if resync_times:
        print(f"    (first resync {figures['seconds_to_first_resync']} s, last {figures['seconds_to_last_resync']} s "
              "after the burst)")
    for what, count in other.most_common():
        print(f"other: {count:>5}  {what}")
    print(f"subscribe burst -> last eose: {figures['seconds_to_last_eose']} s "
          f"(first {figures['seconds_to_first_eose']} s, median {figures['seconds_to_median_eose']} s)", flush=True)
    return figures


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--changes", type=int, default=20_000, help="backlog, in deliveries of 1,000 changes")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0, help="for the whole run, seconds")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench-storm"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    raise_fd_limit(4 * args.clients + 1024)

    async def bounded() -> dict[str, Any]:
        # A last resort over the per-phase deadlines: the shutdown and disconnects get a minute more.
        async with asyncio.timeout(args.timeout + 60):
            return await run(await asyncio.to_thread(server_dsn, args.data_dir), args)

    figures = asyncio.run(bounded())
    write_results(args.results, figures)
    sys.exit(0 if figures["completed"] == args.clients and not figures["eose_with_wrong_count"] else 1)


if __name__ == "__main__":
    main()
