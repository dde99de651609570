"""An asyncio client for timebank-realtime that hands each subscription every change exactly once, in
cursor order, across disconnects, server restarts, resyncs and restarts of its own process.

It asks for batch frames, keeps the last cursor of each subscription (in a ``CursorStore`` when the
subscription has a ``key``), reconnects with exponential backoff and full jitter, resubscribes with
``since`` = where it left off (or where a resync said), and drops anything already delivered.
Handlers run one at a time, in cursor order per subscription::

    async with TimebankClient("http://127.0.0.1:3000") as client:
        await client.subscribe({"address": "SP…"}, on_change, key="my-bot", since=0)
        await asyncio.Event().wait()

The rules it follows are ``routing.py``'s (docs/protocol.md, "Client rules").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import socketio
from pydantic import ValidationError

from .filters import NOTHING, Filter, FilterShapeError, normalize_filter
from .models import (
    CHANGE_KINDS,
    BatchFrame,
    Change,
    ChangeKind,
    Eose,
    Heartbeat,
    Resync,
    SubscribeAck,
    parse_change,
    parse_reply,
)
from .routing import ChangeRouter, Handler, Since, Subscription, tags_of
from .stores import CursorStore, JsonFileCursorStore
from .watch import TransactionStatus, TransactionWatch

logger = logging.getLogger(__name__)

TokenSource = str | Callable[[], str | Awaitable[str]]
ConnectionState = Literal["connecting", "connected", "disconnected", "closed"]
# Refusals that pass: asked again a second later, up to _RESUBSCRIBE_ATTEMPTS times.
_RETRYABLE = {"rate_limited", "unavailable", "not_connected"}
_RESUBSCRIBE_ATTEMPTS = 5


class SubscriptionRefused(RuntimeError):
    """The server refused a subscription: ``code`` and ``message`` are its words (docs/protocol.md, Errors)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TimebankClient:
    def __init__(self, url: str, *, token: TokenSource | None = None, store: CursorStore | None = None,
                 batch: bool = True, transports: Sequence[str] = ("websocket",),
                 backoff_initial: float = 0.5, backoff_max: float = 15.0, max_pending: int = 10_000,
                 on_heartbeat: Callable[[Heartbeat], None] | None = None,
                 on_state: Callable[[ConnectionState], None] | None = None) -> None:
        self._url = url
        self._token = token
        # Only a subscription with a key touches the store: the JSON file is made at its first save.
        self.store: CursorStore = store if store is not None else JsonFileCursorStore()
        self._saving: asyncio.Future[None] | None = None  # the latest cursor save (close() waits for it)
        self._batch = batch
        self._transports = list(transports)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_heartbeat = on_heartbeat
        self._on_state = on_state
        self._subscriptions: list[Subscription] = []
        # Changes taken from the socket, waiting for their handler. Bounded: past max_pending the link is
        # dropped until the handlers are down to a tenth of it, then resumes after the last change taken
        # (the server keeps the rest in its log, not this process in its memory).
        self._deliveries: asyncio.Queue[tuple[Subscription, Change]] = asyncio.Queue()
        self._max_pending = max_pending
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._sio: socketio.AsyncClient | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._router = ChangeRouter(self._subscriptions, self._enqueue)
        self.state: ConnectionState = "disconnected"
        # Links made so far (a reconnect counts one more).
        self.connections = 0

    @property
    def pending(self) -> int:
        """Changes taken from the socket and not yet handled."""
        return self._deliveries.qsize()

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

    async def subscribe(self, filter_payload: Mapping[str, Any], handler: Handler, *, key: str | None = None,
                        since: Since = "now") -> Subscription:
        """Subscribe. ``since``: a cursor to replay after, or "now". With a ``key``, the cursor of each
        change handled is saved in the store under it, and a subscription with a key already stored
        resumes after that cursor instead of ``since``. Raises SubscriptionRefused."""
        payload = dict(filter_payload)
        stored = await self.store.load(key) if key is not None else None
        subscription = Subscription(payload=payload, filter=_filter_of(payload), handler=handler, since=since,
                                    key=key, last_cursor=stored, handled_cursor=stored)
        self._subscriptions.append(subscription)
        if self._connected.is_set():
            sio = self._sio
            try:
                await self._send_subscribe(subscription)
            except SubscriptionRefused:
                self._subscriptions.remove(subscription)
                raise
            except socketio.exceptions.SocketIOError as error:
                # No answer: the link dropped (the reconnect subscribes it again with the others), or it
                # stalled: drop it, rather than leave the server's replay for it unclaimed. Only that
                # link: a newer one has subscribed it already.
                logger.info("timebank: no answer to subscribe (%s: %s); reconnecting", type(error).__name__, error)
                if self._sio is sio:
                    self._disconnected.set()
        return subscription

    async def watch_transaction(
            self, tx_hash: str,
            on_status: Callable[[TransactionStatus], Awaitable[None] | None] | None = None) -> TransactionWatch:
        """Follow a transaction's status: pending, confirmed (its events arrived), failed (stored with
        ``success: false``), rolled_back (a rollback named it). Its events stored before the watch
        count too (it replays from cursor 0). ``await watch.close()`` ends it."""
        watch = TransactionWatch(tx_hash, on_status)
        subscription = await self.subscribe({"tx_hash": watch.tx_hash}, watch.handle, since=0)

        async def close() -> None:
            await self.unsubscribe(subscription)

        watch.close = close
        return watch

    async def unsubscribe(self, subscription: Subscription) -> None:
        subscription.active = False
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        if self._sio is not None and self._sio.connected and subscription.server_id:
            with contextlib.suppress(socketio.exceptions.SocketIOError):
                await self._call(self._sio, "unsubscribe", {"id": subscription.server_id}, timeout=5)

    async def close(self) -> None:
        self._closed = True
        await self._drop_client()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._saving is not None:
            with contextlib.suppress(Exception):  # logged by _handle
                await self._saving
        self._set_state("closed")

    # --- connection supervision ---------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    def _backoff(self, failures: int) -> float:
        # Exponential backoff with full jitter: many clients of a restarted server spread out.
        return random.uniform(0, min(self._backoff_max, self._backoff_initial * 2 ** failures))

    async def _supervise(self) -> None:
        failures = 0
        while not self._closed:
            try:
                self._set_state("connecting")
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
                self._set_state("disconnected")
                await self._caught_up.wait()
                await asyncio.sleep(self._backoff(failures))
                failures += 1

    async def _connect(self) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            **{f"chainhook:{kind}": self._change_handler(kind) for kind in CHANGE_KINDS},
            "chainhook:batch": self._on_batch, "chainhook:eose": self._on_eose,
            "chainhook:heartbeat": self._on_heartbeat_message, "chainhook:resync": self._on_resync}
        for name, handler in handlers.items():
            sio.on(name, _while_current(self, sio, handler))
        sio.on("disconnect", _while_current(self, sio, self._on_disconnect))
        self._sio = sio
        self._disconnected.clear()
        auth: dict[str, Any] = {"batch": self._batch}
        if self._token is not None:
            auth["token"] = await self._current_token()
        await sio.connect(self._url, transports=self._transports, auth=auth, wait_timeout=10)
        self.connections += 1
        logger.info("timebank: connected to %s", self._url)
        self._router.new_connection()
        # Subscriptions added while we resubscribe are picked up too, before we call ourselves connected.
        attempted: set[int] = set()
        while pending := [s for s in self._subscriptions if id(s) not in attempted]:
            for subscription in pending:
                attempted.add(id(subscription))
                await self._resubscribe(subscription)
        self._connected.set()
        self._set_state("connected")

    async def _current_token(self) -> str:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str):
            raise TypeError(f"the token source gave {type(token).__name__}, not a string")
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

    def _enqueue(self, subscription: Subscription, change: Change) -> None:
        self._deliveries.put_nowait((subscription, change))
        if self._deliveries.qsize() >= self._max_pending and self._caught_up.is_set():
            logger.warning("timebank: the handlers are %d changes behind; the link waits until they catch up",
                           self._deliveries.qsize())
            self._caught_up.clear()
            self._disconnected.set()

    # --- subscribing ------------------------------------------------------------------------------------

    async def _resubscribe(self, subscription: Subscription) -> None:
        for attempt in range(1, _RESUBSCRIBE_ATTEMPTS + 1):
            try:
                await self._send_subscribe(subscription)
                return
            except SubscriptionRefused as error:
                if error.code not in _RETRYABLE or attempt == _RESUBSCRIBE_ATTEMPTS:
                    logger.error("timebank: subscription %s refused on reconnect: %s", subscription.payload, error)
                    return
                await asyncio.sleep(1.0)

    async def _send_subscribe(self, subscription: Subscription) -> None:
        if self._sio is None:
            raise SubscriptionRefused("not_connected", "the client is not connected")
        sio = self._sio
        since = subscription.subscribed_since = subscription.resume_since()
        reply = parse_reply(await self._call(sio, "subscribe", {**subscription.payload, "since": since}, timeout=10))
        if not isinstance(reply, SubscribeAck):
            raise SubscriptionRefused(reply.error.code, reply.error.message)
        subscription.filter = _filter_of(reply.filter, fallback=subscription.filter)
        start = self._router.acknowledged(subscription, reply)
        # A live-only subscription with a key starts from its ack on the next run, not from "now" again.
        # Its start, not last_cursor: the changes that came before the ack (in the same read) are queued
        # by now, and a cursor saved is a change handled.
        if start is not None and subscription.key is not None:
            await self.store.save(subscription.key, start)

    async def _call(self, sio: socketio.AsyncClient, event: str, data: dict[str, Any], *,
                    timeout: float) -> Any:  # noqa: ASYNC109 (python-socketio's own timeout, passed on)
        """``sio.call``, given up as soon as that link drops: python-socketio waits out the whole timeout
        for an answer that can no longer come (raises DisconnectedError then)."""
        answer = asyncio.ensure_future(sio.call(event, data, timeout=timeout))
        answer.add_done_callback(_retrieved)
        dropped = asyncio.ensure_future(self._disconnected.wait())
        try:
            await asyncio.wait({answer, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            if not answer.done():
                answer.cancel()
        if answer.done() and not answer.cancelled() and self._sio is sio:
            return answer.result()
        raise socketio.exceptions.DisconnectedError("the link dropped before the answer came")

    # --- receiving -----------------------------------------------------------------------------------------

    def _change_handler(self, kind: ChangeKind) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def on_change(body: dict[str, Any]) -> None:
            # No await before routing: python-socketio may run each message's handler as a task of its
            # own, and tasks start in the order they were made.
            with _malformed(f"chainhook:{kind}"):
                self._router.on_change(parse_change(body, kind), tags_of(body))
        return on_change

    async def _on_batch(self, body: dict[str, Any]) -> None:
        with _malformed("chainhook:batch"):
            frame = BatchFrame.model_validate(body)
            tags = tags_of(frame.tags())
            for change in frame.changes:
                self._router.on_change(change, tags)

    async def _on_eose(self, body: dict[str, Any]) -> None:
        with _malformed("chainhook:eose"):
            self._router.on_eose(Eose.model_validate(body))

    async def _on_heartbeat_message(self, body: dict[str, Any]) -> None:
        if self._on_heartbeat is not None:
            with _malformed("chainhook:heartbeat"):
                self._on_heartbeat(Heartbeat.model_validate(body))

    async def _on_resync(self, body: dict[str, Any]) -> None:
        with _malformed("chainhook:resync"):
            resync = Resync.model_validate(body)
            logger.warning("timebank: the server resyncs this connection (%s); resuming from %s",
                           resync.reason, resync.subscriptions)
            self._router.on_resync(resync)

    async def _dispatch(self) -> None:
        while True:
            subscription, change = await self._deliveries.get()
            if subscription.active:
                await self._handle(subscription, change)
            # A plain-function handler with no key never suspends, and Queue.get() does not while the
            # queue holds anything: yield, or a long backlog would starve the link (pings included).
            await asyncio.sleep(0)
            if self._deliveries.qsize() <= self._max_pending // 10:
                self._caught_up.set()

    async def _handle(self, subscription: Subscription, change: Change) -> None:
        """Run the handler, then save the cursor: a crash between the two repeats that one change on
        the next run (at least once), never loses it. A handler that raises is logged; its change
        counts as handled, so that one bad change does not stop the feed."""
        try:
            result = subscription.handler(change)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("timebank: handler failed for cursor %s", change.cursor)
        subscription.handled_cursor = change.cursor
        if subscription.key is not None:
            # Shielded, and kept for close() to wait for: a save cut short by close() would land after
            # it returned, and a client opened next on the same store would repeat handled changes.
            self._saving = asyncio.ensure_future(self.store.save(subscription.key, change.cursor))
            try:
                await asyncio.shield(self._saving)
            except Exception:
                logger.exception("timebank: could not save cursor %s of %s", change.cursor, subscription.key)


def _while_current(client: TimebankClient, sio: socketio.AsyncClient,
                   handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``handler`` for the messages of ``sio`` while it is the client's link: a message of a link
    already dropped (its handler runs as a task of its own) must not reach the next link's state."""
    async def on_message(*args: Any) -> None:
        if client._sio is sio:
            await handler(*args)
    return on_message


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A call given up on may still end in an error (its timeout): nobody asks, so mark it seen."""
    if not future.cancelled():
        future.exception()


def _filter_of(payload: Mapping[str, Any], fallback: Filter = NOTHING) -> Filter:
    # A filter the client cannot read is still sent: the server's refusal names the problem, and a
    # filter it takes comes back normalized in its ack.
    try:
        return normalize_filter(payload)
    except FilterShapeError:
        return fallback


@contextlib.contextmanager
def _malformed(name: str) -> Iterator[None]:
    try:
        yield
    except ValidationError as error:
        logger.error("timebank: ignored a malformed %s message: %s", name, error)
