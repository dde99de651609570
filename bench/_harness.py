"""What the benchmarks share: where their database is, the application on a loopback port, results."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from timebank_realtime.app import create_app
from timebank_realtime.embedded_db import start_embedded_postgres
from timebank_realtime.settings import Settings


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
