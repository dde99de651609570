"""Run the real application on a free loopback port for a benchmark."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from timebank_realtime.app import create_app
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
