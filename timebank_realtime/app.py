"""The application factory: settings in, a wired aiohttp application out. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .embedded_db import start_embedded_postgres
from .errors import DatabaseUnavailable
from .history import HistoryHandlers
from .http_errors import error_response, json_errors
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .openapi import openapi_document
from .realtime.hub import RealtimeHub
from .settings import Settings
from .store.db import create_pool
from .store.deliveries import DeliveryWriter
from .store.migrate import apply_migrations, load_migrations
from .store.reads import HistoryReader, LogReader
from .tailer import Pushed, Tailer
from .webhook import make_webhook_handler

logger = logging.getLogger(__name__)

STATIC = (Path(__file__).parent / "static").resolve()

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
WRITER = web.AppKey("writer", DeliveryWriter)
LOG = web.AppKey("log", LogReader)
HISTORY = web.AppKey("history", HistoryReader)
HUB = web.AppKey("hub", RealtimeHub)
TAILER = web.AppKey("tailer", Tailer)
TAILER_TASK = web.AppKey("tailer_task", asyncio.Task[None])
METRICS = web.AppKey("metrics", Metrics)
DRAINING = web.AppKey("draining", asyncio.Event)


class InFlight:
    """Webhook deliveries being handled, so that a drain can wait for them to be answered."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


IN_FLIGHT = web.AppKey("in_flight", InFlight)


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


def _file(path: Path, **headers: str) -> web.StreamResponse:
    """A file of STATIC, or the JSON not_found (FileResponse answers a missing file itself, when it is
    sent: an empty 404 that no middleware sees)."""
    if not path.is_relative_to(STATIC) or not path.is_file():
        return error_response(404, "not_found", "no such file")
    return web.FileResponse(path, headers=headers)


async def _static(request: web.Request) -> web.StreamResponse:
    return _file((STATIC / request.match_info["path"]).resolve())


async def _browser_client(_request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "timebank-realtime.js", **{"Content-Type": "text/javascript; charset=utf-8"})


async def _dashboard(_request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready when the database answers with every shipped migration applied and the tailer keeps up."""
    app = request.app
    if app[DRAINING].is_set():  # first, and without asking the database: the balancer must see it at once
        return web.json_response({"status": "unready", "reasons": ["shutting_down"]}, status=503)
    reasons: list[str] = []
    try:
        version = await app[HISTORY].schema_version()
        shipped = len(load_migrations())
        if version < shipped:
            reasons.append(f"migrations applied up to {version}, this version ships {shipped}")
    except DatabaseUnavailable as error:
        reasons.append(f"database unreachable: {error}")
    tailer, task = app[TAILER], app[TAILER_TASK]
    if task.done():
        reasons.append("the tailer has stopped")
    elif not tailer.listening:
        reasons.append("the tailer is not connected to the database")
    limit = app[SETTINGS].ready_max_lag_seconds
    if tailer.lag() > 0 and tailer.seconds_since_progress() > limit:
        reasons.append(f"the tailer is {tailer.lag()} changes behind and made no progress for {limit:g}s")
    if reasons:
        return web.json_response({"status": "unready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "cursor": tailer.cursor})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def _openapi_handler() -> Handler:
    document = openapi_document()

    async def serve(_request: web.Request) -> web.Response:
        return web.json_response(document)

    return serve


@web.middleware
async def _server_timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Server-Timing on every response: how long the server spent, for clients and the benchmark."""
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


# --- draining: SIGTERM to stop ----------------------------------------------------------------


def _counted(in_flight: InFlight, handler: Handler) -> Handler:
    async def counted(request: web.Request) -> web.StreamResponse:
        with in_flight.track():
            return await handler(request)

    return counted


async def _close_connections_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, every answer closes its connection: a keep-alive client comes back through
    the load balancer, to another node, instead of to one that is going away."""
    if request.app[DRAINING].is_set() and response.status != 101:  # (not a websocket upgrade)
        response.force_close()
        response.headers["Connection"] = "close"


async def drain(app: web.Application, *, minimum_seconds: float, grace_seconds: float,
                hurry: asyncio.Event | None = None) -> None:
    """Stop taking work, but stay reachable: /readyz answers 503 ``shutting_down`` at once, new
    deliveries 503 ``shutting_down`` with ``Connection: close``, and deliveries in flight finish.
    Returns once those are answered and ``minimum_seconds`` have passed (time for a load balancer
    to see /readyz fail), after ``grace_seconds`` at most, or when ``hurry`` is set (a second
    signal); then sends the sockets off to reconnect elsewhere. The caller then stops the server."""
    app[DRAINING].set()
    in_flight = app[IN_FLIGHT]
    waiters: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(asyncio.gather(asyncio.sleep(min(minimum_seconds, grace_seconds)), in_flight.idle())),
        asyncio.ensure_future((hurry or asyncio.Event()).wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=grace_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    if in_flight.count:
        logger.warning("%d deliveries still in flight at the end of the drain; they are cancelled and "
                       "roll back (Chainhook retries them)", in_flight.count)
    await app[HUB].close()


def create_app(settings: Settings) -> web.Application:
    if settings.chainhook_webhook_secret is None:
        logger.warning("CHAINHOOK_WEBHOOK_SECRET is not set: the webhook accepts loopback clients only")
    # auto_decompress off: the webhook decodes Content-Encoding itself (webhook.decode_body), so a coding
    # it does not take, or a body that does not decode, gets a JSON 4xx instead of aiohttp's text/plain
    # 400 (br, zstd), a 500 (gzip declared, plain body) or silence (an unknown coding).
    app = web.Application(client_max_size=settings.max_payload_bytes, middlewares=[_server_timing, json_errors],
                          handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[DRAINING] = asyncio.Event()
    app[IN_FLIGHT] = InFlight()
    app.on_response_prepare.append(_close_connections_while_draining)
    metrics = Metrics()
    app[METRICS] = metrics
    hub = RealtimeHub(settings, metrics)
    app[HUB] = hub
    hub.attach(app)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_tailer)
    app.on_shutdown.append(_close_sockets)
    app.router.add_post("/api/webhooks/chainhook", _counted(app[IN_FLIGHT], make_webhook_handler(
        WRITER, DRAINING, settings.chainhook_webhook_secret, settings.max_payload_bytes,
        settings.stream_delivery_bytes, metrics)))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/openapi.json", _openapi_handler())
    app.router.add_routes(HistoryHandlers(HISTORY, HUB).routes())
    app.router.add_get("/client/timebank-realtime.js", _browser_client)
    app.router.add_get("/", _dashboard)
    app.router.add_get("/static/{path:.+}", _static)
    return app
