"""Run ``timebank-realtime`` as real OS processes, as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CHAINHOOK_WEBHOOK_SECRET", "TIMEBANK_DATA_DIR", "PORT", "HOST")}
    env.update(settings)
    return env


class ServiceProcess:
    def __init__(self, log_path: Path, port: int | None = None, **settings: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = service_env(HOST="127.0.0.1", PORT=str(self.port), TAILER_POLL_SECONDS="0.25",
                          SOCKET_PING_INTERVAL_SECONDS="1", **{"SHUTDOWN_DRAIN_SECONDS": "0", **settings})
        self._log = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "timebank_realtime", "serve"], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_ready(self, within: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        async with aiohttp.ClientSession() as http:
            while asyncio.get_running_loop().time() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with http.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"service not ready within {within}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode
