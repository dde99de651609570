"""The application factory: settings in, a wired aiohttp application out. One cleanup context per
resource (the database, the tailer); the routes are http/routes.py's. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .http.cors import cors_middleware
from .http.errors import json_errors
from .http.inflight import InFlight
from .http.ops import server_timing
from .http.routes import setup_routes
from .http.serving import close_connections_while_draining
from .keys import DRAINING, DSN, HISTORY, HUB, IN_FLIGHT, LOG, METRICS, SETTINGS, TAILER, TAILER_TASK, WRITER
from .metrics import Metrics
from .realtime.hub import RealtimeHub
from .settings import Settings
from .store.db import create_pool
from .store.deliveries import DeliveryWriter
from .store.embedded import resolve_dsn
from .store.migrate import migrate
from .store.reads import HistoryReader, LogReader
from .tailer import Pushed, Tailer

logger = logging.getLogger(__name__)


POOL_CLOSE_SECONDS = 5.0


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = await resolve_dsn(settings)
    await migrate(dsn, settings)
    pool = await create_pool(dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
                             connect_timeout=settings.db_connect_timeout_seconds,
                             retry_seconds=settings.db_startup_retry_seconds)
    app[DSN] = dsn
    # One pool for all: the webhook writes; the tailer, the sockets and the history API only read.
    acquire_timeout = settings.db_connect_timeout_seconds
    app[WRITER] = DeliveryWriter(pool, acquire_timeout=acquire_timeout)
    app[LOG] = LogReader(pool, acquire_timeout=acquire_timeout)
    app[HISTORY] = HistoryReader(pool, acquire_timeout=acquire_timeout)
    yield
    # close() waits for every connection to come back; one stuck (a query cancelled at shutdown whose
    # cancel request gets no answer) would hold shutdown forever.
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        logger.warning("database pool not closed within %ss; terminating its connections", POOL_CLOSE_SECONDS)
        pool.terminate()


async def _tailer(app: web.Application) -> AsyncIterator[None]:
    settings, hub, log = app[SETTINGS], app[HUB], app[LOG]
    # Live subscribers start from "now": the log's head when this process starts.
    pushed = Pushed(cursor=await log.last_cursor(), tip=await app[HISTORY].chain_tip())
    hub.bind(log, pushed)
    tailer = Tailer(log, app[DSN], hub.publish, pushed,
                    poll_seconds=settings.tailer_poll_seconds, batch_size=settings.tailer_batch_size,
                    connect_timeout=settings.db_connect_timeout_seconds)
    app[TAILER] = tailer
    tasks = [asyncio.create_task(tailer.run(), name="tailer"),
             asyncio.create_task(hub.run_heartbeat(), name="heartbeat")]
    app[TAILER_TASK] = tasks[0]
    metrics = app[METRICS]
    metrics.tailer_lag_cursors.set_function(tailer.lag)
    metrics.tailer_idle_seconds.set_function(tailer.seconds_since_progress)
    for task in tasks:
        task.add_done_callback(_report_background_exit)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _report_background_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.critical("background task %s stopped; pushes are affected", task.get_name(),
                        exc_info=task.exception())


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close()


def create_app(settings: Settings) -> web.Application:
    if settings.chainhook_webhook_secret is None:
        logger.warning("CHAINHOOK_WEBHOOK_SECRET is not set: the webhook accepts loopback clients only")
    # auto_decompress off: the webhook decodes Content-Encoding itself (http/bodies.py), so a coding
    # it does not take, or a body that does not decode, gets a JSON 4xx instead of aiohttp's text/plain
    # 400 (br, zstd), a 500 (gzip declared, plain body) or silence (an unknown coding).
    # cors outside json_errors: a JSON error on /api/* carries the CORS headers too (http/cors.py).
    app = web.Application(client_max_size=settings.max_payload_bytes,
                          middlewares=[server_timing, cors_middleware(settings.cors_allowed_origins), json_errors],
                          handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[DRAINING] = asyncio.Event()
    app[IN_FLIGHT] = InFlight()
    app.on_response_prepare.append(close_connections_while_draining)
    metrics = Metrics()
    app[METRICS] = metrics
    hub = RealtimeHub(settings, metrics)
    app[HUB] = hub
    hub.attach(app)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_tailer)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app
