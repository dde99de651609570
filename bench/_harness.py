"""What the benchmarks share: the command line, where their database is, the application on a loopback port, results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

# Run as files (``python bench/fanout.py``), the scripts have bench/ on the path but not the checkout's root:
# put it first, for what they share with the tests (tests/processes.py), and so that timebank_realtime here is
# the checkout's, as in the ``python -m timebank_realtime serve`` that ``ours`` starts from the root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.processes import SERVE, environment, free_port
from tests.processes import ServerProcess as Server
from timebank_realtime.app import create_app
from timebank_realtime.events import EVENT_COLUMNS, EventRow
from timebank_realtime.settings import Settings
from timebank_realtime.store.embedded import start_embedded_postgres

ROOT = Path(__file__).resolve().parents[1]
# What the reference COPY writes: an event row's columns, its cursor and its format.
RAW_COLUMNS = [*EVENT_COLUMNS, "last_cursor", "source_format"]


def command_line(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser; its --help is the script's docstring as written (how to run it, what it measures)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


@asynccontextmanager
async def serve_on_loopback(dsn: str) -> AsyncIterator[str]:
    """Yield the base URL of the service running on DATABASE_URL ``dsn``."""
    settings = Settings(_env_file=None, database_url=dsn, log_level="WARNING")  # type: ignore[call-arg]
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def server_dsn(data_dir: Path) -> str:
    """DATABASE_URL if set, else an embedded PostgreSQL kept in ``data_dir`` between runs."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    data_dir.mkdir(parents=True, exist_ok=True)
    return start_embedded_postgres(data_dir / "postgres")


def write_results(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")


async def fresh_database(server: str, name: str) -> str:
    """Drop and create database ``name`` on the server DSN ``server``; return its DSN."""
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def raw_record(row: EventRow, cursor: int) -> tuple[Any, ...]:
    """A row as the reference COPY takes it: its data serialized before any clock starts."""
    return (row.tx_hash, row.block_height, row.block_hash, row.tx_index, row.event_index, row.contract_id,
            row.event_type, json.dumps(row.event_data), list(row.affected_addresses), row.success, row.timestamp,
            cursor, "v1")


async def raw_copy_seconds(dsn: str, batches: Sequence[Sequence[tuple[Any, ...]]]) -> float:
    """The reference: seconds to COPY each batch, committed one by one, into a table with the columns and
    indexes of chainhook_events (``LIKE … INCLUDING ALL``) in the migrated database ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE raw_events (LIKE chainhook_events INCLUDING ALL)")
        started = time.perf_counter()
        for batch in batches:
            async with conn.transaction():
                await conn.copy_records_to_table("raw_events", records=batch, columns=RAW_COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process (``VmHWM``: its peak so far), in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


@asynccontextmanager
async def ours(dsn: str, **settings: str) -> AsyncIterator[Server]:
    """``timebank-realtime serve`` on a loopback port, ready (migrated, tailer running). One worker unless
    ``WORKERS`` says otherwise, so that a figure per process (RSS) is the server's."""
    port = free_port()
    env = environment(("CHAINHOOK_WEBHOOK_SECRET", "SOCKET_AUTH_SECRET"),
                      DATABASE_URL=dsn, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="WARNING",
                      **{"WORKERS": "1", **settings})
    server = Server("ours", SERVE, url=f"http://127.0.0.1:{port}", env=env)
    try:
        await server.wait_ready("/readyz")
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def peer(name: str, command: list[str]) -> AsyncIterator[Server]:
    """A reference server that prints {"port": n} on its first line once it listens."""
    server = Server(name, command, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert server.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.process.stdout.readline), timeout=30)
        server.url = f"http://127.0.0.1:{json.loads(line)['port']}"
        yield server
    finally:
        server.stop()


def node_peer() -> list[str]:
    return ["node", str(ROOT / "bench" / "peers" / "node_broadcaster.mjs"), "0"]


def python_peer() -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "peers" / "python_broadcaster.py"), "0"]
