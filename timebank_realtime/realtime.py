"""Socket.IO: the only server module that imports socketio. Connections, subscriptions, replay, emits.

Sending: every server -> client message is encoded once for its whole audience and put straight on
each recipient's Engine.IO queue, synchronously. python-socketio's ``emit`` would encode per call and
start an asyncio task per recipient; doing it here keeps fan-out cheap and, with no await between
deciding and queueing, makes each socket's order exactly the order of the code below.

Delivery guarantee (documented in the README): a subscription gets every matching change with a
cursor greater than its ``since`` exactly once and in cursor order: first the replay from the log,
then the live changes held while the replay ran, then ``chainhook:eose``, then live changes. A socket
gets each change once for all of its subscriptions that want it at the time: one replay per socket
reads for all of its replaying subscriptions, and a message names every subscription it is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import engineio
import socketio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from . import jsoncodec
from .auth import AuthError, verify_token
from .errors import DatabaseUnavailable
from .messages import BATCH, EOSE, HEARTBEAT, RESYNC, batch_message, heartbeat_message, message_for
from .metrics import Metrics
from .sessions import Session, Subscription, TokenBucket, replay_groups, tag, tag_runs
from .settings import Settings
from .store.reads import LogReader as EventStore
from .subscriptions import FilterError, SubscriptionRegistry, parse_subscribe

logger = logging.getLogger(__name__)

# A socket whose connection holds this much unsent data gets further messages through its queue, so
# that a slow reader shows up in the queue's length (SLOW_CONSUMER_BACKLOG).
DIRECT_WRITE_LIMIT_BYTES = 256 * 1024
# A socket holding this many times SLOW_CONSUMER_BACKLOG is resynced at once, without a grace period.
SLOW_CONSUMER_HARD_FACTOR = 4
# Replays of one socket whose positions are within this many replay batches (in cursors) read together.
REPLAY_MERGE_SPAN_BATCHES = 4


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class RealtimeHub:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        # None keeps Engine.IO's same-origin default; an empty list would switch origin checks off.
        origins: str | list[str] | None = settings.cors_allowed_origins or None
        if origins == ["*"]:
            origins = "*"
        self.sio = _GuardedServer(
            async_mode="aiohttp",
            serializer=_BoundedJsonPacket,
            cors_allowed_origins=origins,
            max_http_buffer_size=settings.max_socket_message_bytes,
            ping_interval=settings.socket_ping_interval_seconds,
            ping_timeout=settings.socket_ping_timeout_seconds,
            logger=False,
            engineio_logger=_EngineLog(logging.getLogger("engineio.server"), {}),
        )
        self._settings = settings
        self._metrics = metrics
        self.writes = {"direct": 0, "queued": 0}
        metrics.watch(lambda: len(self.sessions), lambda: self.registry.count_by_kind(), lambda: dict(self.writes))
        self._auth_secret = settings.socket_auth_secret.get_secret_value() if settings.socket_auth_secret else None
        self.registry = SubscriptionRegistry()
        self.sessions: dict[str, Session] = {}
        self.cursor = 0
        # The last cursor of the last run of changes handed to the sockets: a live subscription was
        # given every match up to here (``self.cursor`` moves to the end of a run before it is sent).
        self.published = 0
        # Replays wait their turn for a database connection instead of timing out on the pool, which
        # the webhook and the tailer share: at most half the pool reads for replays (one connection
        # of a pool of one).
        self._replay_slots = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))
        self.tip: dict[str, Any] = {"block_height": None, "block_hash": None, "last_delivery_at": None}
        self._store: EventStore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._sent: dict[str, Any] = {}  # the messages counter of each event name
        self._upgraded_transports: dict[str, asyncio.Transport | None] = {}
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("subscribe", self._on_subscribe)
        self.sio.on("unsubscribe", self._on_unsubscribe)

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app, socketio_path="socket.io")
        app.middlewares.append(_refuse_websocket_compression)
        app.middlewares.append(self._note_websocket_upgrades)

    @web.middleware
    async def _note_websocket_upgrades(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Remember the connection of each polling session's websocket upgrade, for direct writes.
        (A websocket-first session's connection is its connect request's; see _on_connect.)"""
        eio_sid = request.query.get("sid")
        if eio_sid is None or not _is_socketio_websocket(request):
            return await handler(request)
        self._upgraded_transports[eio_sid] = request.transport
        try:
            return await handler(request)
        finally:
            self._upgraded_transports.pop(eio_sid, None)

    def bind(self, store: EventStore, *, head: int, tip: Mapping[str, Any]) -> None:
        """Start from the log's head: live subscribers get what commits from now on."""
        self._store = store
        self.cursor = self.published = head
        self.tip = dict(tip)

    @property
    def connection_count(self) -> int:
        return len(self.sessions)

    # --- lifecycle --------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("socket task failed", exc_info=task.exception())

    async def run_heartbeat(self) -> None:
        """Tell every socket the cursor and chain tip, so a quiet chain is told from a dead link."""
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            packet = encode_message(HEARTBEAT, heartbeat_message(self.cursor, self.tip, datetime.now(UTC)))
            for session in list(self.sessions.values()):
                self._enqueue(session, packet)

    async def close(self) -> None:
        for handle in self._expiries.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        for sid in list(self.sessions):
            await self.sio.disconnect(sid)

    # --- connections -------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        grant = None
        if self._auth_secret is not None:
            token = auth.get("token") if isinstance(auth, Mapping) else None
            try:
                grant = verify_token(token, self._auth_secret)
            except AuthError as error:
                logger.info("socket refused remote=%s code=%s", environ.get("REMOTE_ADDR"), error.code)
                # The client's connect_error carries message "<code>: <text>" and data {code, message}.
                raise socketio.exceptions.ConnectionRefusedError(
                    f"{error.code}: {error.message}", {"code": error.code, "message": error.message}) from None
            delay = max(0.0, grant.expires_at - time.time())
            self._expiries[sid] = asyncio.get_running_loop().call_later(delay, self._expire, sid)
        batched = isinstance(auth, Mapping) and auth.get("batch") is True
        request = environ.get("aiohttp.request")
        self.sessions[sid] = Session(sid=sid, grant=grant, batched=batched,
                                     eio_sid=self.sio.manager.eio_sid_from_sid(sid, "/") or "",
                                     transport=request.transport if request is not None
                                     and _is_socketio_websocket(request) else None,
                                     bucket=TokenBucket.full(self._settings.subscribe_rate_per_second,
                                                             time.monotonic()))
        logger.info("socket connected sid=%s remote=%s subject=%s batch=%s", sid, environ.get("REMOTE_ADDR"),
                    grant.subject if grant else "-", batched)

    def _expire(self, sid: str) -> None:
        logger.info("socket token expired sid=%s", sid)
        self._spawn(self._disconnect(sid))

    async def _disconnect(self, sid: str) -> None:
        # Engine.IO flushes what is queued first; a client too stuck to take it is dropped by ping.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.socket_ping_timeout_seconds):
                await self.sio.disconnect(sid)

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        session = self.sessions.pop(sid, None)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()
        dropped = self.registry.drop_socket(sid)
        logger.info("socket disconnected sid=%s subscriptions=%d resynced=%s", sid, dropped,
                    session.resyncing if session else False)

    # --- subscribe / unsubscribe -------------------------------------------------------------------

    async def _on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        session = self.sessions.get(sid)
        if session is None or session.resyncing:
            return _error("not_connected", "this connection is closing")
        if not session.bucket.take(time.monotonic()):
            return _error("rate_limited", f"at most {self._settings.subscribe_rate_per_second:g} "
                          "subscribe calls a second per connection")
        try:
            request = parse_subscribe(data, self._settings.max_filter_values)
        except FilterError as error:
            return _error(error.code, error.message)
        if session.grant is not None and not session.grant.permits(request.filter):
            return _error("forbidden", "the connection's token does not allow this subscription")
        if request.since is not None and request.since > self.cursor:
            refusal = await self._check_not_in_future(request.since)
            if refusal is not None:
                return refusal
            if not self._open(session):
                return _error("not_connected", "this connection is closing")
        # Checked after the only await, so that concurrent subscribe calls cannot pass it together.
        limit = self._settings.max_subscriptions_per_connection
        if len(session.subscriptions) >= limit:
            return _error("too_many_subscriptions", f"a connection holds at most {limit} subscriptions")
        return self._start_subscription(session, request.filter, request.since)

    async def _check_not_in_future(self, since: int) -> dict[str, Any] | None:
        assert self._store is not None
        try:
            head = await self._store.last_cursor()
        except DatabaseUnavailable:
            return _error("unavailable", "the event store is unreachable; retry the subscription")
        if since > head:
            return _error("cursor_in_future", f"cursor {since} is beyond the newest change ({head})")
        return None

    def _start_subscription(self, session: Session, request_filter: Any, since: int | None) -> dict[str, Any]:
        # No await from here to the return: every change after `upto` reaches this subscription
        # through publish(), every change up to it through the replay.
        upto = self.cursor
        floor = upto if since is None else since
        sub_id = self.registry.add(session.sid, request_filter)
        subscription = session.subscriptions[sub_id] = Subscription(
            id=sub_id, filter=request_filter, floor=floor, upto=upto, position=floor, last_tagged=max(floor, upto))
        if subscription.replay_done:
            # Nothing to read: it goes live right after its ack, not after a batch of the socket's
            # other replays, which may be waiting for the reader or for a database slot.
            self._spawn(self._go_live(session, subscription))
        elif not session.replay_running:
            session.replay_running = True
            self._spawn(self._replay(session))
        return {"ok": True, "id": sub_id, "cursor": max(floor, upto), "filter": request_filter.describe()}

    async def _on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        sub_id = data.get("id") if isinstance(data, Mapping) else None
        if not isinstance(sub_id, str):
            return _error("invalid_request", "unsubscribe takes {\"id\": <subscription id>}")
        session = self.sessions.get(sid)
        if session is None or not self.registry.remove(sid, sub_id):
            return _error("unknown_subscription", f"this connection has no subscription {sub_id!r}")
        session.drop_subscription(sub_id)
        return {"ok": True, "id": sub_id}

    # --- replay and handoff ------------------------------------------------------------------------

    def _open(self, session: Session) -> bool:
        return not session.resyncing and self.sessions.get(session.sid) is session

    async def _go_live(self, session: Session, subscription: Subscription) -> None:
        # A task of its own only so that it runs after the ack is queued, like a replay's handoff.
        if self._open(session) and session.subscriptions.get(subscription.id) is subscription \
                and not subscription.live:
            self._hand_off(session, subscription)

    async def _replay(self, session: Session) -> None:
        """The socket's one replay: reads the log for its replaying subscriptions together, so that a
        change they share goes out once, naming them all. Hands each off when it is done.

        Subscriptions whose replays are far apart (one from the start, one from a minute ago) take
        turns, a batch each, so that the short one is not held up by the long one; a change both
        want then reaches the socket once for each."""
        turn = 0
        try:
            while self._open(session):
                for subscription in [s for s in session.replaying() if s.replay_done]:
                    if not self._hand_off(session, subscription):
                        return
                groups = replay_groups([s for s in session.replaying() if not s.replay_done],
                                       span=REPLAY_MERGE_SPAN_BATCHES * self._settings.replay_batch_size)
                if not groups or not await self._replay_batch(session, groups[turn % len(groups)]):
                    return
                turn += 1
        except DatabaseUnavailable as error:
            logger.warning("replay for sid=%s stopped: %s", session.sid, error)
            self._resync(session, reason="the event store was unreachable during replay")
        finally:
            session.replay_running = False

    async def _replay_batch(self, session: Session, readers: list[Subscription]) -> bool:
        """Send the next batch of the log to the subscriptions in ``readers``; False once the socket is
        gone or resynced."""
        assert self._store is not None
        # A batch must fit under the slow-consumer limit with room to spare. The replay goes at the
        # reader's pace: it waits for the socket to take most of what is queued.
        batch = max(1, min(self._settings.replay_batch_size, self._settings.slow_consumer_backlog // 2))
        if not await self._wait_for_room(session, batch):
            self._resync(session, reason="the connection fell too far behind")
            return False
        start = min(s.position for s in readers)
        end = max(s.upto for s in readers)
        async with self._replay_slots:
            if not self._open(session):
                return False
            records = await self._store.changes_after(start, batch, upto=end,
                                                      match=[s.filter.as_match() for s in readers])
        # Judged after the wait for a slot, during which live changes may have been held for it.
        if not self._admit(session):
            return False
        # Subscriptions added meanwhile join at the next batch; removed ones are no longer owed anything.
        readers = [s for s in readers if session.subscriptions.get(s.id) is s]
        chosen, owners = [], []
        for record in records:
            record_owners = self._replay_owners(session, readers, record)
            if record_owners:
                chosen.append(record)
                owners.append(record_owners)
        if chosen and not self._send_tagged(session, chosen, owners):
            return False
        covered = records[-1]["cursor"] if len(records) == batch else end
        for subscription in readers:
            subscription.position = max(subscription.position, min(covered, subscription.upto))
        return True

    @staticmethod
    def _replay_owners(session: Session, readers: list[Subscription], record: dict[str, Any]) -> frozenset[str]:
        """The subscriptions a replayed change goes to: the readers that have not had it yet, and the
        subscriptions holding it as a live change (they get it once, now, and keep it till their eose)."""
        cursor = record["cursor"]
        owners = {s.id for s in readers if s.position < cursor <= s.upto and s.filter.matches(record)}
        if owners:
            owners |= session.take_held(cursor)
        return frozenset(owners)

    async def _wait_for_room(self, session: Session, messages: int) -> bool:
        """Wait until ``messages`` more fit under the slow-consumer limit; False if the socket does not
        drain within the ping timeout."""
        limit = self._settings.slow_consumer_backlog
        deadline = time.monotonic() + self._settings.socket_ping_timeout_seconds
        while self._queued(session) + messages > limit:
            if time.monotonic() > deadline or not self._open(session):
                return False
            await asyncio.sleep(0.01)
        return True

    def _hand_off(self, session: Session, subscription: Subscription) -> bool:
        """Send what was held for a subscription whose replay is done, then go live and send eose, all
        without an await. Every message tagged for it comes before its eose; none after."""
        held = session.held_for(subscription.id)
        if held:
            if not self._admit(session):
                return False
            records = [one.record for one in held]
            owners = [frozenset(session.take_held(record["cursor"])) for record in records]
            if not self._send_tagged(session, records, owners):
                return False
        subscription.live = True
        self._enqueue(session, encode_message(EOSE, {"id": subscription.id, "cursor": subscription.last_tagged}))
        return True

    # --- publishing ----------------------------------------------------------------------------------

    def _note_tip(self, record: Mapping[str, Any]) -> None:
        self.tip["last_delivery_at"] = record.get("committed_at")
        height = self.tip.get("block_height")
        if record["change"] != "rollback" and (height is None or record["block_height"] >= height):
            self.tip["block_height"] = record["block_height"]
            self.tip["block_hash"] = record["block_hash"]

    async def publish(self, records: list[dict[str, Any]]) -> None:
        """Hand a run of changes to their audiences, in cursor order. Called by the tailer only.

        Matching is done once per distinct filter. A socket that asked for batches gets one
        ``chainhook:batch`` frame with all its changes of the run, and sockets that get the same
        changes share one encoded frame; other sockets get one message per change, each change
        encoded once."""
        self._note_run(records)
        batched: dict[tuple[int, ...], list[Session]] = defaultdict(list)
        single: dict[tuple[int, ...], list[Session]] = defaultdict(list)
        for sid, positions in self._route(records).items():
            session = self.sessions[sid]
            if self._admit(session):
                (batched if session.batched else single)[tuple(positions)].append(session)
        for shared, sessions in batched.items():
            chosen = [records[i] for i in shared]
            frame = encode_message(BATCH, batch_message(chosen), weight=len(chosen))
            for session in sessions:
                self._send_encoded(session, frame)
        encoded: dict[int, _EncodedPacket] = {}
        for shared, sessions in single.items():
            run = _PacketRun([self._single_message(encoded, i, records[i]) for i in shared])
            for session in sessions:
                self._send_encoded(session, run)
        if records:
            self.published = records[-1]["cursor"]

    def _note_run(self, records: Sequence[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        for record in records:
            self.cursor = record["cursor"]
            self._note_tip(record)
            if record.get("committed_at") is not None:
                self._metrics.push_seconds.observe(max(0.0, (now - record["committed_at"]).total_seconds()))

    @staticmethod
    def _single_message(encoded: dict[int, _EncodedPacket], position: int, record: dict[str, Any]) -> _EncodedPacket:
        """A change's own message, encoded once for every socket of the run that gets it."""
        packet = encoded.get(position)
        if packet is None:
            packet = encoded[position] = encode_message(*message_for(record))
        return packet

    def _route(self, records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
        """Which positions of ``records`` each socket gets now, untagged: those at least one of its live
        subscriptions wants. The client hands such a message to every subscription it matches, holding
        it for one still replaying, so it counts for those too. Changes only replaying subscriptions
        want are held for them instead."""
        wanted: dict[str, list[int]] = {}
        pending: dict[str, dict[int, set[str]]] = {}
        for positions, holders in self.registry.audiences(records):
            for sid, sub_id in holders:
                session = self.sessions.get(sid)
                subscription = session.subscriptions.get(sub_id) if session is not None else None
                if session is None or subscription is None or session.resyncing:
                    continue
                floor = subscription.floor
                taken = positions if records[positions[0]]["cursor"] > floor else \
                    [i for i in positions if records[i]["cursor"] > floor]
                if not taken:
                    continue
                if not subscription.live:
                    owners = pending.setdefault(sid, {})
                    for i in taken:
                        owners.setdefault(i, set()).add(sub_id)
                    continue
                earlier = wanted.get(sid)
                # A socket's subscriptions are OR-ed: each change goes to it once, in order.
                wanted[sid] = taken if earlier is None else sorted(set(earlier).union(taken))
        hold_limit = SLOW_CONSUMER_HARD_FACTOR * self._settings.slow_consumer_backlog
        for sid, owners in pending.items():
            session, sent = self.sessions[sid], set(wanted.get(sid, ()))
            fresh = [i for i in sorted(owners) if i not in sent]
            # Nothing else bounds what is held: a replay waiting for its reader or for a database slot
            # does not take it, and the socket's queue does not show it.
            if len(session.held) + len(fresh) > hold_limit:
                self._resync(session, reason="its replay fell too far behind the live changes")
                continue
            for i in fresh:
                session.hold(records[i], owners[i])
        return wanted

    # --- sending -------------------------------------------------------------------------------------

    def _engine_socket(self, session: Session) -> Any:
        return self.sio.eio.sockets.get(session.eio_sid)

    def _queued(self, session: Session) -> int:
        """Changes waiting in the socket's Engine.IO queue (a batch frame counts its changes): a reader
        that cannot keep up shows up here, since direct writes stop once its connection backs up."""
        engine_socket = self._engine_socket(session)
        if engine_socket is None:
            return 0
        return sum(getattr(packet, "weight", 1) for packet in engine_socket.queue._queue)

    def _backlog(self, session: Session) -> int:
        return len(session.held) + self._queued(session)

    def _enqueue(self, session: Session, packet: _EncodedPacket | _PacketRun) -> bool:
        """Send an encoded message: written straight to the websocket's connection when that cannot
        overtake anything, else queued for the socket's Engine.IO writer (where ``emit`` puts it).

        Straight is safe when the socket is on websocket, nothing is queued, the writer is waiting
        for the queue (so everything before was handed to the connection, in order) and the
        connection is not backed up. It saves a task wake-up and a frame encoding per recipient."""
        engine_socket = self._engine_socket(session)
        if engine_socket is None or engine_socket.closed:
            return False
        transport = session.transport or self._upgraded_transports.get(session.eio_sid)
        queue = engine_socket.queue
        if (transport is not None and engine_socket.upgraded and not engine_socket.closing and queue.empty()
                and queue._getters and not transport.is_closing()
                and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT_BYTES):
            transport.write(packet.websocket_frame)
            self.writes["direct"] += len(packet.packets)
        else:
            for one in packet.packets:
                queue.put_nowait(one)
            self.writes["queued"] += len(packet.packets)
        return True

    def _send_tagged(self, session: Session, records: list[dict[str, Any]], owners: list[frozenset[str]]) -> bool:
        """Send replayed or held changes, each tagged with the subscriptions it is for: one frame per
        run of changes with the same owners to a batched socket, else one message per change."""
        for run_owners, run in tag_runs(records, owners):
            if not self._send_run(session, run, tag(run_owners)):
                return False
            for sub_id in run_owners:
                subscription = session.subscriptions.get(sub_id)
                if subscription is not None:
                    subscription.last_tagged = max(subscription.last_tagged, run[-1]["cursor"])
        return True

    def _send_run(self, session: Session, records: list[dict[str, Any]], tagged: dict[str, Any]) -> bool:
        if session.batched:
            frame = encode_message(BATCH, {**batch_message(records), **tagged}, weight=len(records))
            return self._send_encoded(session, frame)
        run = []
        for record in records:
            name, message = message_for(record)
            run.append(encode_message(name, {**message, **tagged}))
        return self._send_encoded(session, _PacketRun(run))

    def _admit(self, session: Session) -> bool:
        """Whether more may be sent to the socket, asked once per run of changes.

        A socket is a slow consumer (resynced) when it has held ``SLOW_CONSUMER_BACKLOG`` changes or
        more for a whole ping timeout, or at once holds four times that. A reader that keeps up on
        average but is behind right after a burst of large deliveries catches up within the grace."""
        if session.resyncing:
            return False
        backlog, limit = self._backlog(session), self._settings.slow_consumer_backlog
        if backlog < limit:
            session.behind_since = None
            return True
        now = time.monotonic()
        if session.behind_since is None:
            session.behind_since = now
        if backlog >= SLOW_CONSUMER_HARD_FACTOR * limit or \
                now - session.behind_since >= self._settings.socket_ping_timeout_seconds:
            self._resync(session, reason="the connection fell too far behind")
            return False
        return True

    def _send_encoded(self, session: Session, packet: _EncodedPacket | _PacketRun) -> bool:
        if not self._open(session):
            return False
        if not self._enqueue(session, packet):
            return False
        for one in packet.packets:
            counter = self._sent.get(one.event)
            if counter is None:
                counter = self._sent[one.event] = self._metrics.messages.labels(event=one.event)
            counter.inc()
        return True

    def _resync(self, session: Session, *, reason: str) -> None:
        """Stop sending, tell the client where to resume each subscription, and disconnect it."""
        if not self._open(session):
            return  # already told, or gone: a replay that outlived its socket tells nobody
        session.resyncing = True
        self._metrics.slow_consumers.inc()
        positions = session.resume_positions(self.published)
        cursor = min(positions.values(), default=self.published)
        logger.warning("slow consumer sid=%s: %s; resync from cursor %d", session.sid, reason, cursor)
        self._enqueue(session, encode_message(RESYNC, {"cursor": cursor, "subscriptions": positions,
                                                       "reason": reason}))
        self._spawn(self._disconnect(session.sid))


def _bounded_int(digits: str) -> int | float:
    # A cursor fits in 64 bits. Longer integers read as infinity, which validation refuses like any
    # other non-integer; python-engineio's own reader raises instead, and the packet and its ack are lost.
    return int(digits) if len(digits) <= 20 else math.inf


class _BoundedJson:
    """The JSON of Socket.IO packets: the standard library's, with integers bounded as above."""

    @staticmethod
    def loads(text: str | bytes, **options: Any) -> Any:
        return json.loads(text, **{**options, "parse_int": _bounded_int})

    dumps = staticmethod(json.dumps)


class _BoundedJsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    json = _BoundedJson


class _GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """A client that sends what is not a Socket.IO packet (a stray binary frame, a packet type a
    server never receives, an attachment nobody announced) is closed with one warning, as Node's
    socket.io does, instead of an ERROR traceback per frame."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            self._binary_packet.pop(eio_sid, None)
            logger.warning("socket sent a malformed packet eio_sid=%s (%s); closing it", eio_sid,
                           type(error).__name__)
            await self.eio.disconnect(eio_sid)


class _EngineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """python-engineio's log, warnings and errors only (it logs every packet at INFO). A frame it
    cannot read gets an "Unknown receive error" traceback at ERROR, and is ignored: a client's fault,
    for which one warning line is enough."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if msg == "Unknown receive error":
            self.warning("socket sent a frame Engine.IO cannot read (%s); ignored it",
                         type(sys.exc_info()[1]).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


@web.middleware
async def _refuse_websocket_compression(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decline permessage-deflate on Socket.IO websockets, as Node's socket.io does by default.

    Browsers offer it and aiohttp would accept it: every frame would then be compressed once per
    recipient, with a compressor per connection (CPU per message and about 4x the memory per socket).
    """
    if request.path.startswith("/socket.io") and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
        headers = request.headers.copy()
        del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
        request = request.clone(headers=headers)
    return await handler(request)


def _is_socketio_websocket(request: web.Request) -> bool:
    return request.path.startswith("/socket.io") and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


class _EncodedPacket(engineio.packet.Packet):  # type: ignore[misc]
    """An Engine.IO message encoded once, however many sockets it is sent to: as text for the
    Engine.IO writer (websocket or polling) and as a whole websocket frame for direct writes."""

    def __init__(self, event: str, message: bytes, weight: int = 1) -> None:
        super().__init__(engineio.packet.MESSAGE)
        self.event = event
        self.weight = weight  # how many changes it carries, for the slow-consumer limit
        self._message = message  # the Engine.IO packet: b"4" + the Socket.IO packet
        self._text: str | None = None
        self._frame: bytes | None = None

    @property
    def packets(self) -> tuple[_EncodedPacket]:
        return (self,)

    def encode(self, b64: bool = False) -> str:
        if self._text is None:
            self._text = self._message.decode()
        return self._text

    @property
    def websocket_frame(self) -> bytes:
        """The server-to-client websocket text frame (RFC 6455 5.2: final, unmasked, and
        uncompressed, since compression is declined)."""
        if self._frame is None:
            size = len(self._message)
            if size < 126:
                header = bytes((0x81, size))
            elif size < 1 << 16:
                header = bytes((0x81, 126)) + size.to_bytes(2, "big")
            else:
                header = bytes((0x81, 127)) + size.to_bytes(8, "big")
            self._frame = header + self._message
        return self._frame


class _PacketRun:
    """Several messages for the same sockets, in order: one write of all their frames to a
    connection, or one queue entry each."""

    def __init__(self, packets: list[_EncodedPacket]) -> None:
        self.packets = packets
        self._frames: bytes | None = None

    @property
    def websocket_frame(self) -> bytes:
        if self._frames is None:
            self._frames = b"".join(packet.websocket_frame for packet in self.packets)
        return self._frames


def encode_message(name: str, payload: Mapping[str, Any], *, weight: int = 1) -> _EncodedPacket:
    """A Socket.IO EVENT on the default namespace ("2" + JSON array, Socket.IO protocol v5) inside an
    Engine.IO MESSAGE ("4"). Our payloads are plain JSON with no binary parts, which spares the
    walk python-socketio makes through every value looking for bytes."""
    return _EncodedPacket(name, b"42" + jsoncodec.dumps_bytes([name, payload]), weight)
