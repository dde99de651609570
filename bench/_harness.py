"""What the benchmarks share: where their database is, the application on a loopback port, results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from timebank_realtime.app import create_app
from timebank_realtime.embedded_db import start_embedded_postgres
from timebank_realtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process (``VmHWM``: its peak so far), in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class Server:
    """A server under test in its own OS process, so that its CPU and memory are its own."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], url: str) -> None:
        self.name = name
        self.process = process
        self.url = url

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _start(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, **options)


@asynccontextmanager
async def ours(dsn: str, **settings: str) -> AsyncIterator[Server]:
    """``timebank-realtime serve`` on a loopback port, ready (migrated, tailer running)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CHAINHOOK_WEBHOOK_SECRET", "SOCKET_AUTH_SECRET")}
    env.update(DATABASE_URL=dsn, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="WARNING", **settings)
    process = _start([sys.executable, "-m", "timebank_realtime", "serve"], env=env)
    server = Server("ours", process, f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if process.poll() is not None:
                    raise RuntimeError(f"timebank-realtime exited with {process.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(server.url + "/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("timebank-realtime did not become ready within 60 s")
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def peer(name: str, command: list[str]) -> AsyncIterator[Server]:
    """A reference server that prints {"port": n} on its first line once it listens."""
    process = _start(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=30)
    server = Server(name, process, f"http://127.0.0.1:{json.loads(line)['port']}")
    try:
        yield server
    finally:
        server.stop()


def node_peer() -> list[str]:
    return ["node", str(ROOT / "bench" / "peers" / "node_broadcaster.mjs"), "0"]


def python_peer() -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "peers" / "python_broadcaster.py"), "0"]
