"""An asyncio client for timebank-realtime that sees every change exactly once, in order.

It remembers the last cursor delivered for each subscription, reconnects with exponential backoff
and full jitter, resubscribes with ``since`` = that cursor, and drops anything it has already
delivered. Handlers run one at a time, in cursor order per subscription::

    async with TimebankClient("http://127.0.0.1:3000") as client:
        await client.subscribe({"address": "SP…"}, on_change, since=0)
        await asyncio.Event().wait()

The server side of it is ``realtime/``; the rules it follows are ``routing.py``'s (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import socketio

from ..realtime.subscriptions import parse_filter
from .routing import ChangeRouter, ClientSubscription, Handler

logger = logging.getLogger(__name__)

TokenSource = str | Callable[[], str | Awaitable[str]]
_RETRYABLE = {"rate_limited", "unavailable", "not_connected"}


class SubscriptionRefused(RuntimeError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class TimebankClient:
    def __init__(self, url: str, *, token: TokenSource | None = None, transports: Sequence[str] = ("websocket",),
                 backoff_initial: float = 0.5, backoff_max: float = 15.0,
                 on_heartbeat: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._url = url
        self._token = token
        self._transports = list(transports)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_heartbeat = on_heartbeat
        self._subscriptions: list[ClientSubscription] = []
        self._keys = itertools.count(1)
        self._deliveries: asyncio.Queue[tuple[ClientSubscription, str, dict[str, Any]]] = asyncio.Queue()
        self._sio: socketio.AsyncClient | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._router = ChangeRouter(self._subscriptions, lambda *delivery: self._deliveries.put_nowait(delivery))
        self.connections = 0

    async def __aenter__(self) -> TimebankClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- public API ----------------------------------------------------------------------------------

    async def start(self, *, wait: float = 10.0) -> None:
        """Connect (retrying with backoff in the background) and wait up to ``wait`` s for the first link."""
        self._tasks = [asyncio.create_task(self._supervise(), name="timebank-client"),
                       asyncio.create_task(self._dispatch(), name="timebank-client-dispatch")]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._connected.wait()

    async def subscribe(self, filter_payload: Mapping[str, Any], handler: Handler, *,
                        since: int | str = "now") -> ClientSubscription:
        """Subscribe; ``since`` is a cursor to replay from, or "now". Raises SubscriptionRefused."""
        subscription = ClientSubscription(key=next(self._keys), filter_payload=dict(filter_payload),
                                          filter=parse_filter(filter_payload), handler=handler, since=since)
        self._subscriptions.append(subscription)
        if self._connected.is_set():
            try:
                await self._send_subscribe(subscription)
            except SubscriptionRefused:
                self._subscriptions.remove(subscription)
                raise
        return subscription

    async def unsubscribe(self, subscription: ClientSubscription) -> None:
        subscription.active = False
        self._subscriptions.remove(subscription)
        if self._sio is not None and self._sio.connected and subscription.server_id:
            with contextlib.suppress(socketio.exceptions.TimeoutError):
                await self._sio.call("unsubscribe", {"id": subscription.server_id}, timeout=5)

    async def close(self) -> None:
        self._closed = True
        await self._drop_client()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- connection supervision ---------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        # Exponential backoff with full jitter: many clients of a restarted server spread out.
        return random.uniform(0, min(self._backoff_max, self._backoff_initial * 2 ** failures))

    async def _supervise(self) -> None:
        failures = 0
        while not self._closed:
            try:
                await self._connect()
                failures = 0
                await self._disconnected.wait()
            # A link lost while resubscribing fails the subscribe call with a Socket.IO error
            # (BadNamespaceError, its TimeoutError), not a connection error: reconnect all the same.
            except (socketio.exceptions.SocketIOError, OSError, TimeoutError) as error:
                logger.info("timebank: connection failed (%s: %s)", type(error).__name__, error)
            except Exception:
                # Stopping here would stop the feed for good: log it and reconnect.
                logger.exception("timebank: unexpected error on the connection; reconnecting")
            finally:
                self._connected.clear()
                await self._drop_client()
            if not self._closed:
                await asyncio.sleep(self._backoff(failures))
                failures += 1

    async def _connect(self) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("chainhook:event", self._on_event)
        sio.on("chainhook:rollback", self._on_rollback)
        sio.on("chainhook:block", self._on_block)
        sio.on("chainhook:block_rollback", self._on_block_rollback)
        sio.on("chainhook:batch", self._on_batch)
        sio.on("chainhook:eose", self._on_eose)
        sio.on("chainhook:heartbeat", self._on_heartbeat_message)
        sio.on("chainhook:resync", self._on_resync)
        sio.on("disconnect", self._on_disconnect)
        self._sio = sio
        self._disconnected.clear()
        # Batches: one frame per delivery instead of a message per change (the server's cheaper path).
        auth: dict[str, Any] = {"batch": True}
        if self._token is not None:
            auth["token"] = await self._current_token()
        await sio.connect(self._url, transports=self._transports, auth=auth, wait_timeout=10)
        self.connections += 1
        logger.info("timebank: connected to %s", self._url)
        self._router.new_connection()
        # Subscriptions added while we resubscribe are picked up too, before we call ourselves connected.
        attempted: set[int] = set()
        while pending := [s for s in self._subscriptions if s.key not in attempted]:
            for subscription in pending:
                attempted.add(subscription.key)
                await self._resubscribe(subscription)
        self._connected.set()

    async def _current_token(self) -> str:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        assert isinstance(token, str)
        return token

    async def _drop_client(self) -> None:
        sio, self._sio = self._sio, None
        if sio is None:
            return
        if sio.connected:
            with contextlib.suppress(Exception):
                await sio.disconnect()
        # Engine.IO keeps its HTTP session for reuse; each connection of ours gets a new client.
        http = sio.eio.http
        if http is not None and not http.closed:
            await http.close()

    async def _on_disconnect(self, *_reason: Any) -> None:
        self._disconnected.set()

    # --- subscribing ------------------------------------------------------------------------------------

    async def _resubscribe(self, subscription: ClientSubscription) -> None:
        for attempt in range(5):
            try:
                await self._send_subscribe(subscription)
                return
            except SubscriptionRefused as error:
                if error.code not in _RETRYABLE or attempt == 4:
                    logger.error("timebank: subscription %s refused on reconnect: %s", subscription.key, error)
                    return
                await asyncio.sleep(1.0)

    async def _send_subscribe(self, subscription: ClientSubscription) -> None:
        assert self._sio is not None
        since = subscription.last_cursor if subscription.last_cursor is not None else subscription.since
        ack = await self._sio.call("subscribe", {**subscription.filter_payload, "since": since}, timeout=10)
        if not ack.get("ok"):
            raise SubscriptionRefused(ack["error"]["code"], ack["error"]["message"])
        if subscription.last_cursor is None:
            subscription.last_cursor = ack["cursor"] if since == "now" else int(since)
        self._router.acknowledged(subscription, ack)

    # --- receiving -----------------------------------------------------------------------------------------

    async def _on_event(self, message: dict[str, Any]) -> None:
        self._router.on_change("event", message)

    async def _on_rollback(self, message: dict[str, Any]) -> None:
        self._router.on_change("rollback", message)

    async def _on_block(self, message: dict[str, Any]) -> None:
        self._router.on_change("block", message)

    async def _on_block_rollback(self, message: dict[str, Any]) -> None:
        self._router.on_change("block_rollback", message)

    async def _on_batch(self, frame: dict[str, Any]) -> None:
        self._router.on_batch(frame)

    async def _on_eose(self, message: dict[str, Any]) -> None:
        self._router.on_eose(message)

    async def _on_heartbeat_message(self, message: dict[str, Any]) -> None:
        if self._on_heartbeat is not None:
            self._on_heartbeat(message)

    async def _on_resync(self, message: dict[str, Any]) -> None:
        # The server drops us next; our own cursors (what we delivered) are where we resume.
        logger.warning("timebank: server asked to resync from %s: %s", message.get("cursor"), message.get("reason"))

    async def _dispatch(self) -> None:
        while True:
            subscription, kind, message = await self._deliveries.get()
            if not subscription.active:
                continue
            try:
                result = subscription.handler(kind, message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("timebank: handler failed for cursor %s", message.get("cursor"))
