"""``serve --workers N``: real worker processes on one real port, a real PostgreSQL and real Socket.IO
clients over websocket; the kernel, not the test, decides which worker takes each connection."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from .conftest import Listener, event_cursors, eventually, load_fixture, post_webhook
from .processes import ServiceProcess, service_env

DELIVERIES = ["v1-stacks-regtest-stx-lock-event.json", "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
              "v1-stacks-print-event-arkadiko-mainnet-2023.json"]
CLIENTS = 16

OpenListener = Callable[..., Awaitable[Listener]]


def serve(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "timebank_realtime", "serve"], capture_output=True, text=True,
                          env=service_env(HOST="127.0.0.1", PORT=str(port), **env), timeout=120)


def workers_of(service: ServiceProcess) -> list[psutil.Process]:
    return psutil.Process(service.pid).children()


def connections_on(process: psutil.Process, port: int, status: str) -> int:
    return sum(1 for c in process.net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == status)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (re-parented to an init that has not reaped it yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def start_workers(tmp_path: Path, database_url: str, count: int = 2) -> tuple[ServiceProcess, list[int]]:
    """The service with ``count`` workers, once each listens; its workers' PIDs."""
    service = ServiceProcess(tmp_path / "service.log", DATABASE_URL=database_url, WORKERS=str(count))
    await service.wait_ready()

    def all_listening() -> bool:
        workers = workers_of(service)
        return len(workers) == count and all(connections_on(w, service.port, psutil.CONN_LISTEN) for w in workers)

    await eventually(all_listening, within=30, interval=0.2)
    return service, [w.pid for w in workers_of(service)]


async def test_workers_share_the_port_and_each_client_gets_every_change_once_in_order(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, listener: OpenListener) -> None:
    service, pids = await start_workers(tmp_path, database_url)
    try:
        clients = [await listener(service.url, "websocket") for _ in range(CLIENTS)]
        for client in clients:
            await client.subscribe({})
        # The kernel spread them (all 16 on one of two workers: a chance of 1 in 32768).
        per_worker = [connections_on(psutil.Process(pid), service.port, psutil.CONN_ESTABLISHED) for pid in pids]
        assert sum(per_worker) >= CLIENTS and all(per_worker), per_worker

        # A connection per delivery, so they reach either worker.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            applied = 0
            for name in DELIVERIES:
                status, body = await post_webhook(http, service.url, load_fixture(name))
                assert status == 200, body
                applied += body["applied"]
        expected = await event_cursors(db)
        assert len(expected) == applied > 0
        await eventually(lambda: all(len(c.cursors) >= applied for c in clients), within=30)
        await asyncio.sleep(0.5)  # nothing more arrives: no duplicate from the other worker
        assert [c.cursors for c in clients] == [expected] * CLIENTS

        # Another server on a port the workers hold is refused, as with one process.
        second = await asyncio.to_thread(serve, service.port, DATABASE_URL=database_url, WORKERS="2")
        assert second.returncode == 1
        assert second.stderr.splitlines()[-1].endswith(
            f"cannot listen on 127.0.0.1:{service.port}: Address already in use")
    finally:
        status = await asyncio.to_thread(service.stop)
    assert status == 0, service.log()
    assert all(gone(pid) for pid in pids)
    log = service.log()
    assert log.count("listening on http://127.0.0.1:") == 2 and log.count(" stopped") == 2


async def test_ctrl_c_to_the_parent_drains_every_worker_and_exits_0(tmp_path: Path, database_url: str) -> None:
    service, pids = await start_workers(tmp_path, database_url)
    try:
        service.process.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C, to the parent alone
        status = await asyncio.to_thread(service.process.wait, 60)
    finally:
        service.stop()
    assert status == 0
    assert all(gone(pid) for pid in pids)
    assert service.log().count(" stopped") == 2


async def test_a_worker_killed_stops_the_others_and_the_service_exits_1(tmp_path: Path, database_url: str) -> None:
    service, pids = await start_workers(tmp_path, database_url)
    try:
        psutil.Process(pids[0]).send_signal(signal.SIGKILL)
        status = await asyncio.to_thread(service.process.wait, 60)
    finally:
        service.stop()
    assert status == 1
    assert all(gone(pid) for pid in pids)
    log = service.log()
    assert f"worker {pids[0]} exited with signal SIGKILL: stopping the others" in log
    assert log.count(" stopped") == 1  # the other one drained


async def test_a_killed_parent_leaves_no_worker_behind(tmp_path: Path, database_url: str) -> None:
    service, pids = await start_workers(tmp_path, database_url)
    try:
        service.kill()
        await eventually(lambda: all(gone(pid) for pid in pids), within=30, interval=0.2)
    finally:
        for pid in pids:  # on failure, ours to clean up
            if not gone(pid):
                psutil.Process(pid).kill()
    assert service.log().count("the serve process that started this worker is gone") == 2


@pytest.mark.parametrize(("env", "message"), [
    ({"PORT": "0"}, "invalid configuration: PORT=0 (any free port) needs WORKERS=1: the workers share one port"),
    ({"WORKERS": "0"}, "invalid configuration: WORKERS: Input should be greater than or equal to 1"),
])
def test_settings_workers_cannot_use_are_refused(env: dict[str, str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "timebank_realtime", "serve", "--workers", "2"],
                            capture_output=True, text=True, timeout=60,
                            env=service_env(DATABASE_URL="postgresql://127.0.0.1:1/none", **env))
    assert result.returncode == 2
    assert result.stderr.strip() == message
