"""Servers in OS processes of their own on loopback ports: ``timebank-realtime`` run as an operator
would, for the tests, and the servers the benchmarks compare (bench/_harness.py imports this).

Started from a command line and an environment; ready once an HTTP path on it answers 200; stopped by its
PID, with SIGTERM first (the service drains and exits 0) and SIGKILL if it has not exited in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

# ``timebank-realtime serve`` on this interpreter, so in this environment.
SERVE = (sys.executable, "-m", "timebank_realtime", "serve")


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(drop: Iterable[str] = (), **settings: str) -> dict[str, str]:
    """This process's environment without the variables ``drop`` names, with ``settings`` over it."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(settings)
    return env


class ServerProcess:
    """One server process, started at once. With ``log_path`` its stdout and stderr go to that file (``log()``
    reads it); otherwise they go where ``popen`` (``subprocess.Popen``'s options) says, by default to ours."""

    def __init__(self, name: str, command: Sequence[str], *, url: str = "", log_path: Path | None = None,
                 **popen: Any) -> None:
        self.name = name
        self.url = url
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        if log_path is not None:
            self._log = log_path.open("wb")
            popen.update(stdout=self._log, stderr=subprocess.STDOUT)
        self.process = subprocess.Popen(list(command), **popen)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What it has written so far; "" without ``log_path``."""
        if self.log_path is None:
            return ""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, path: str = "/healthz", within: float = 60.0) -> None:
        """Return once GET ``url + path`` answers 200. RuntimeError, with the log, if the process exits first
        or ``within`` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(self._failure(f"exited with {self.process.returncode}"))
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + path) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(self._failure(f"not ready on {path} within {within:g} s"))

    def _failure(self, what: str) -> str:
        log = self.log()
        return f"{self.name} {what}" + (f":\n{log}" if log else "")

    def kill(self) -> None:
        """SIGKILL, as a crash would be; returns once it is gone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM, and SIGKILL if it has not exited within ``grace`` seconds; closes the log. Its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
        return self.process.returncode


def service_env(**settings: str) -> dict[str, str]:
    """Our environment without what would point the service elsewhere, with ``settings``."""
    return environment(("DATABASE_URL", "CHAINHOOK_WEBHOOK_SECRET", "TIMEBANK_DATA_DIR", "PORT", "HOST"), **settings)


class ServiceProcess(ServerProcess):
    """``timebank-realtime serve`` on ``port`` (a free one by default) with quick timings and the given
    settings; its output in ``log_path``. One worker unless ``WORKERS`` says otherwise: a test that polls
    must reach the process holding its Engine.IO session."""

    def __init__(self, log_path: Path, port: int | None = None, **settings: str) -> None:
        self.port = port or free_port()
        env = service_env(HOST="127.0.0.1", PORT=str(self.port), TAILER_POLL_SECONDS="0.25",
                          SOCKET_PING_INTERVAL_SECONDS="1",
                          **{"SHUTDOWN_DRAIN_SECONDS": "0", "WORKERS": "1", **settings})
        super().__init__("service", SERVE, url=f"http://127.0.0.1:{self.port}", log_path=log_path, env=env)
