"""``serve --workers N``: N server processes on one port (SO_REUSEPORT), each a whole server tailing the
change log, and this one, the parent, supervising them.

The parent starts the embedded PostgreSQL (when there is no DATABASE_URL) and migrates, once, then runs
each worker as ``serve --workers 1`` with that database's URL. It forwards SIGTERM and SIGINT to the
workers (each drains as a single server does) and exits 0 once all have exited 0. A worker that exits
on its own (a crash, the OOM killer) stops the others and the parent exits 1: a process manager then
restarts the whole service, rather than this one restarting a worker that may fail the same way. A
worker whose parent is gone (killed by SIGKILL) drains and exits by itself (http/serving.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from .app import POOL_CLOSE_SECONDS
from .http.serving import HANDLER_STOP_SECONDS, ensure_can_listen
from .settings import Settings
from .store.embedded import resolve_dsn
from .store.migrate import migrate

logger = logging.getLogger("timebank_realtime")

# Beyond a worker's own limits (the drain, stopping handlers, closing its pool): starting up, logging.
STOP_MARGIN_SECONDS = 10.0


class WorkersUnsupported(ValueError):
    """Several workers were asked for where they cannot share a port."""


def default_workers() -> int:
    """The cores this process may run on (its affinity, as a container's cpuset limits it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_workers(settings: Settings, workers: int) -> None:
    if workers == 1:
        return
    if not hasattr(socket, "SO_REUSEPORT"):
        raise WorkersUnsupported("WORKERS above 1 needs SO_REUSEPORT, which this system lacks: set WORKERS=1")
    if settings.port == 0:
        raise WorkersUnsupported("PORT=0 (any free port) needs WORKERS=1: the workers share one port")


def worker_command(parent_pid: int) -> list[str]:
    return [sys.executable, "-m", "timebank_realtime", "serve", "--workers", "1", "--worker-of", str(parent_pid)]


def stop_seconds(settings: Settings) -> float:
    """How long a worker may take to exit after SIGTERM before it is killed."""
    return settings.shutdown_grace_seconds + HANDLER_STOP_SECONDS + POOL_CLOSE_SECONDS + STOP_MARGIN_SECONDS


class Supervisor:
    """The workers, started, watched and stopped."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._workers: list[asyncio.subprocess.Process] = []
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Migrate, start the workers, and wait for a signal or a worker's exit; the exit status."""
        settings = self._settings
        dsn = await resolve_dsn(settings)
        await migrate(dsn, settings)
        ensure_can_listen(settings.host, settings.port)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            await self._start(dsn)
            failed = await self._wait_for_stop_or_exit()
            return 1 if await self._stop_all() or failed else 0
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _start(self, dsn: str) -> None:
        env = {**os.environ, "DATABASE_URL": dsn}
        for _ in range(self._count):
            if self._stopping.is_set():
                return
            # A process group of its own: a terminal's Ctrl-C reaches this process only, which passes it
            # on once (a second one would cut the worker's drain short). Out of the terminal's foreground
            # group, a read of it would stop the worker: it gets no stdin.
            worker = await asyncio.create_subprocess_exec(*worker_command(os.getpid()), env=env, process_group=0,
                                                          stdin=asyncio.subprocess.DEVNULL)
            self._workers.append(worker)
            if self._stopping.is_set():  # signalled while it was being started
                worker.send_signal(signal.SIGTERM)
        logger.info("started %d workers on http://%s:%d", len(self._workers), self._settings.host,
                    self._settings.port, extra={"pids": ",".join(str(w.pid) for w in self._workers)})

    def _on_signal(self) -> None:
        # First signal: each worker drains. Second: each worker ends its drain at once.
        self._stopping.set()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                    worker.send_signal(signum)

    async def _wait_for_stop_or_exit(self) -> bool:
        """Wait for a signal (False) or a worker exiting without being asked to (True)."""
        stopping = asyncio.create_task(self._stopping.wait())
        exits = {asyncio.create_task(worker.wait()): worker for worker in self._workers}
        try:
            await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, *exits):
                task.cancel()
        if self._stopping.is_set():
            return False
        for worker in self._workers:
            if worker.returncode is not None:
                logger.error("worker %d exited with %s: stopping the others", worker.pid,
                             describe_exit(worker.returncode))
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        return True

    async def _stop_all(self) -> bool:
        """Wait for every worker to exit (they have been signalled), killing those that outlast their
        limit; whether any exited other than with 0."""
        statuses = await asyncio.gather(*(self._reap(worker) for worker in self._workers))
        # Killed by our SIGTERM: one that had not yet set up its handler, so had nothing to drain.
        return any(status not in (0, -signal.SIGTERM) for status in statuses)

    async def _reap(self, worker: asyncio.subprocess.Process) -> int:
        try:
            async with asyncio.timeout(stop_seconds(self._settings)):
                return await worker.wait()
        except TimeoutError:
            logger.error("worker %d did not exit in time: killing it", worker.pid)
            worker.kill()
            return await worker.wait()


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"status {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


async def supervise(settings: Settings, workers: int) -> int:
    return await Supervisor(settings, workers).run()

