"""Run ``timebank-realtime`` as real OS processes, as an operator would."""

from __future__ import annotations

from pathlib import Path

from timebank_dev.processes import SERVE, ServerProcess, environment, free_port

__all__ = ["ServiceProcess", "free_port", "service_env"]


def service_env(**settings: str) -> dict[str, str]:
    """Our environment without what would point the service elsewhere, with ``settings``."""
    return environment(("DATABASE_URL", "CHAINHOOK_WEBHOOK_SECRET", "TIMEBANK_DATA_DIR", "PORT", "HOST"), **settings)


class ServiceProcess(ServerProcess):
    """``timebank-realtime serve`` on ``port`` (a free one by default) with quick timings and the given
    settings; its output in ``log_path``."""

    def __init__(self, log_path: Path, port: int | None = None, **settings: str) -> None:
        self.port = port or free_port()
        env = service_env(HOST="127.0.0.1", PORT=str(self.port), TAILER_POLL_SECONDS="0.25",
                          SOCKET_PING_INTERVAL_SECONDS="1", **{"SHUTDOWN_DRAIN_SECONDS": "0", **settings})
        super().__init__("service", SERVE, url=f"http://127.0.0.1:{self.port}", log_path=log_path, env=env)
