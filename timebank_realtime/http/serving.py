"""Serving until a signal, then draining: the node stops taking work while a load balancer still
sends it some, finishes what it took, and sends its sockets elsewhere (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from typing import Any

from aiohttp import web

from ..keys import DRAINING, HUB, IN_FLIGHT
from ..settings import Settings
from .errors import AppRunner

logger = logging.getLogger(__name__)

class CannotListen(OSError):
    """The server's address cannot be bound (a port in use, an address this host does not have)."""


# How often a worker looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 0.5


def cannot_listen(host: str, port: int, error: OSError) -> CannotListen:
    reason = os.strerror(error.errno) if error.errno else str(error)  # not asyncio's wordy text
    return CannotListen(f"cannot listen on {host}:{port}: {reason}")


def ensure_can_listen(host: str, port: int) -> None:
    """CannotListen unless ``host:port`` could be bound by one process alone, as a single server binds
    it. Workers bind with SO_REUSEPORT, which would let them join a server already there (another
    ``serve`` of the same user) and share its connections; this probe refuses that, as today."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise CannotListen(f"cannot listen on {host}:{port}: {error.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise cannot_listen(host, port, error) from None


# Once the drain is over, how long handlers still running (a delivery past the grace, a socket
# being closed) get before they are cancelled; a cancelled delivery rolls back.
HANDLER_STOP_SECONDS = 2.0


async def serve_until_signalled(app: web.Application, settings: Settings, *, parent_pid: int | None = None) -> None:
    """Serve; on SIGTERM or SIGINT drain (``drain``): /readyz and new deliveries answer 503
    ``shutting_down`` (Chainhook retries, through a load balancer on another node) while in-flight
    deliveries finish (each is one transaction: stored whole or not at all), for at least
    SHUTDOWN_DRAIN_SECONDS and at most SHUTDOWN_GRACE_SECONDS; then send sockets off to reconnect
    elsewhere, stop listening and close the pool. A second signal ends the drain at once.

    With ``parent_pid`` this is a worker of ``serve --workers``: it shares the port with its siblings
    (SO_REUSEPORT), and drains as on SIGTERM once that process is gone (killed, say), leaving no orphan."""
    logger = logging.getLogger("timebank_realtime")  # the process's own lines, under the package's name
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    # Before anything starts: a signal while starting (the pool, the tailer, the freeze) drains once
    # started, instead of ending the process half-way with the signal's default action.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    runner = AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HANDLER_STOP_SECONDS)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_port=parent_pid is not None).start()
        except OSError as error:
            raise cannot_listen(settings.host, settings.port, error) from None
        freeze_start_up_objects()
        logger.info("listening on http://%s:%d", settings.host, settings.port, extra={"pid": os.getpid()})
        watch = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid is not None else None
        await stop.wait()
        if watch is not None:
            watch.cancel()
        logger.info("shutting down: draining deliveries and sockets (at least %gs, at most %gs)",
                    min(settings.shutdown_drain_seconds, settings.shutdown_grace_seconds),
                    settings.shutdown_grace_seconds)
        await drain(app, minimum_seconds=settings.shutdown_drain_seconds,
                    grace_seconds=settings.shutdown_grace_seconds, hurry=hurry)
    finally:
        await runner.cleanup()
    logger.info("stopped")


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # Polled, which works everywhere: once the parent is gone this process has been re-parented.
    # (No event tells a process that its parent is gone; PR_SET_PDEATHSIG is Linux's only.)
    while True:
        if os.getppid() != parent_pid:
            break
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    logging.getLogger("timebank_realtime").warning("the serve process that started this worker is gone: "
                                                   "shutting down", extra={"pid": os.getpid()})
    stop.set()


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
