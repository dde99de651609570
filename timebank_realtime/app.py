"""The application factory: settings in, a wired aiohttp application out. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .embedded_db import start_embedded_postgres
from .http_errors import json_errors
from .migrations import load_migrations
from .realtime import RealtimeHub
from .settings import Settings
from .store import EventStore, apply_migrations, create_pool
from .tailer import Tailer
from .webhook import make_webhook_handler

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
STORE = web.AppKey("store", EventStore)
HUB = web.AppKey("hub", RealtimeHub)
TAILER = web.AppKey("tailer", Tailer)


async def resolve_dsn(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return await asyncio.to_thread(start_embedded_postgres, settings.embedded_pgdata)


async def migrate(dsn: str, settings: Settings) -> list[int]:
    pool = await create_pool(dsn, min_size=1, max_size=1, connect_timeout=settings.db_connect_timeout_seconds,
                             retry_seconds=settings.db_startup_retry_seconds)
    try:
        async with pool.acquire() as conn:
            return await apply_migrations(conn, load_migrations())
    finally:
        await pool.close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = await resolve_dsn(settings)
    await migrate(dsn, settings)
    pool = await create_pool(dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
                             connect_timeout=settings.db_connect_timeout_seconds,
                             retry_seconds=settings.db_startup_retry_seconds)
    app[DSN] = dsn
    app[STORE] = EventStore(pool, acquire_timeout=settings.db_connect_timeout_seconds)
    yield
    await pool.close()


async def _tailer(app: web.Application) -> AsyncIterator[None]:
    settings, hub = app[SETTINGS], app[HUB]
    # Live subscribers start from "now": the log's head when this process starts.
    hub.cursor = await app[STORE].last_cursor()
    tailer = Tailer(app[STORE], app[DSN], hub.publish, start_cursor=hub.cursor,
                    poll_seconds=settings.tailer_poll_seconds, batch_size=settings.tailer_batch_size,
                    connect_timeout=settings.db_connect_timeout_seconds)
    app[TAILER] = tailer
    task = asyncio.create_task(tailer.run(), name="tailer")
    task.add_done_callback(_report_tailer_exit)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _report_tailer_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.critical("the tailer stopped; no further changes will be pushed", exc_info=task.exception())


async def _disconnect_sockets(app: web.Application) -> None:
    await app[HUB].disconnect_all()


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    if settings.chainhook_webhook_secret is None:
        logger.warning("CHAINHOOK_WEBHOOK_SECRET is not set: the webhook accepts loopback clients only")
    app = web.Application(client_max_size=settings.max_payload_bytes, middlewares=[json_errors])
    app[SETTINGS] = settings
    hub = RealtimeHub(settings)
    app[HUB] = hub
    hub.attach(app)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_tailer)
    app.on_shutdown.append(_disconnect_sockets)
    app.router.add_post("/api/webhooks/chainhook",
                        make_webhook_handler(STORE, settings.chainhook_webhook_secret,
                                             settings.max_payload_bytes))
    app.router.add_get("/healthz", _healthz)
    return app
