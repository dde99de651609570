"""Serving until a signal, then draining: the node stops taking work while a load balancer still
sends it some, finishes what it took, and sends its sockets elsewhere (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import Any

from aiohttp import web

from ..keys import DRAINING, HUB, IN_FLIGHT
from ..settings import Settings
from .errors import AppRunner

logger = logging.getLogger(__name__)

class CannotListen(OSError):
    """The server's address cannot be bound (a port in use, an address this host does not have)."""


# Once the drain is over, how long handlers still running (a delivery past the grace, a socket
# being closed) get before they are cancelled; a cancelled delivery rolls back.
HANDLER_STOP_SECONDS = 2.0


async def serve_until_signalled(app: web.Application, settings: Settings) -> None:
    """Serve; on SIGTERM or SIGINT drain (``drain``): /readyz and new deliveries answer 503
    ``shutting_down`` (Chainhook retries, through a load balancer on another node) while in-flight
    deliveries finish (each is one transaction: stored whole or not at all), for at least
    SHUTDOWN_DRAIN_SECONDS and at most SHUTDOWN_GRACE_SECONDS; then send sockets off to reconnect
    elsewhere, stop listening and close the pool. A second signal ends the drain at once."""
    logger = logging.getLogger("timebank_realtime")  # the process's own lines, under the package's name
    runner = AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HANDLER_STOP_SECONDS)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)  # not asyncio's wordy text
            raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
        freeze_start_up_objects()
        logger.info("listening on http://%s:%d", settings.host, settings.port)
        stop, hurry = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        await stop.wait()
        logger.info("shutting down: draining deliveries and sockets (at least %gs, at most %gs)",
                    min(settings.shutdown_drain_seconds, settings.shutdown_grace_seconds),
                    settings.shutdown_grace_seconds)
        await drain(app, minimum_seconds=settings.shutdown_drain_seconds,
                    grace_seconds=settings.shutdown_grace_seconds, hurry=hurry)
    finally:
        await runner.cleanup()
    logger.info("stopped")


def freeze_start_up_objects() -> None:
    """Move everything alive once started (modules, classes, settings, the pool, the hub) out of the
    garbage collector's generations for good. A full collection stops the event loop, so every
    socket's writes, for as long as it takes to traverse every tracked object: these no longer
    count, and a socket's own objects do."""
    gc.collect()
    gc.freeze()


async def close_connections_while_draining(request: web.Request, response: web.StreamResponse) -> None:
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
