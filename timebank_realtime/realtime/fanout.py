"""Fan-out: which socket gets which change, when, and in what order; replays and their hand-off to
live; slow consumers.

Delivery guarantee (docs/architecture.md): a subscription gets every matching change with a cursor
greater than its ``since`` exactly once and in cursor order: first the replay from the log, then the
live changes held while the replay ran, then ``chainhook:eose``, then live changes. A socket gets each
change once for all of its subscriptions that want it at the time: one replay per socket reads for all
of its replaying subscriptions, and a message names every subscription it is for.

Nothing here knows sockets: messages go out through a ``Writer`` (the wire, or an in-memory one in
tests), and each send is synchronous, so a socket's order is the order of the calls below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import DatabaseUnavailable
from ..metrics import Metrics
from ..settings import Settings
from ..store import EventStore
from .messages import BATCH, EOSE, RESYNC, batch_message, message_for
from .sessions import Session, Subscription, replay_groups, tag, tag_runs
from .subscriptions import Filter, SubscriptionRegistry
from .tasks import TaskSet
from .wire import EncodedPacket, Link, Outgoing, PacketRun, encode_message

logger = logging.getLogger(__name__)

# A socket holding this many times SLOW_CONSUMER_BACKLOG is resynced at once, without a grace period.
SLOW_CONSUMER_HARD_FACTOR = 4
# Replays of one socket whose positions are within this many replay batches (in cursors) read together.
REPLAY_MERGE_SPAN_BATCHES = 4


class Writer(Protocol):
    def send(self, link: Link, packet: Outgoing) -> bool: ...

    def pending(self, link: Link) -> int: ...


class Pushed(Protocol):
    """The tailer's progress: every change up to ``cursor`` has been handed to ``publish``."""

    @property
    def cursor(self) -> int: ...


class Fanout:
    def __init__(self, settings: Settings, metrics: Metrics, writer: Writer, *, sessions: dict[str, Session],
                 registry: SubscriptionRegistry, tasks: TaskSet,
                 disconnect: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        self._settings = settings
        self._metrics = metrics
        self._writer = writer
        self._sessions = sessions
        self._registry = registry
        self._tasks = tasks
        self._disconnect = disconnect
        self._sent: dict[str, Any] = {}  # the messages counter of each event name
        # Replays wait their turn for a database connection instead of timing out on the pool, which
        # the webhook and the tailer share: at most half the pool reads for replays (one connection
        # of a pool of one).
        self._replay_slots = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))
        self._log: EventStore | None = None
        self._pushed: Pushed | None = None

    def bind(self, log: EventStore, pushed: Pushed) -> None:
        self._log, self._pushed = log, pushed

    @property
    def published(self) -> int:
        """The last cursor handed to the sockets: a live subscription was given every match up to
        here. The tailer moves it once ``publish`` returns, so during a run it is the run's start."""
        assert self._pushed is not None
        return self._pushed.cursor

    def pending(self, session: Session) -> int:
        return self._writer.pending(session.link)

    def subscribe(self, session: Session, subscription_filter: Filter, since: int | None) -> Subscription:
        """Register a subscription and start delivering to it, after its ack: the caller sends that
        without an await, so it comes first. Its ack's cursor is its ``last_tagged``."""
        # No await here: every change after `upto` reaches the subscription through publish(), every
        # change up to it through the replay.
        upto = self.published
        floor = upto if since is None else since
        sub_id = self._registry.add(session.sid, subscription_filter)
        subscription = session.subscriptions[sub_id] = Subscription(
            id=sub_id, filter=subscription_filter, floor=floor, upto=upto, position=floor,
            last_tagged=max(floor, upto))
        self._start(session, subscription)
        return subscription

    def unsubscribe(self, session: Session, sub_id: str) -> bool:
        if not self._registry.remove(session.sid, sub_id):
            return False
        session.drop_subscription(sub_id)
        return True

    def _start(self, session: Session, subscription: Subscription) -> None:
        if subscription.replay_done:
            # Nothing to read: it goes live right after its ack, not after a batch of the socket's
            # other replays, which may be waiting for the reader or for a database slot.
            self._tasks.spawn(self._go_live(session, subscription))
        elif not session.replay_running:
            session.replay_running = True
            self._tasks.spawn(self._replay(session))

    def send(self, session: Session, packet: Outgoing) -> bool:
        """Send to a socket that is not being resynced, counting the messages by name."""
        if not self._open(session) or not self._writer.send(session.link, packet):
            return False
        for one in packet.packets:
            counter = self._sent.get(one.event)
            if counter is None:
                counter = self._sent[one.event] = self._metrics.messages.labels(event=one.event)
            counter.inc()
        return True

    # --- publishing ----------------------------------------------------------------------------------

    def publish(self, records: list[dict[str, Any]]) -> None:
        """Hand a run of changes to their audiences, in cursor order. Called by the tailer only, and
        synchronous: no subscription starts half-way through a run.

        Matching is done once per distinct filter. A socket that asked for batches gets one
        ``chainhook:batch`` frame with all its changes of the run, and sockets that get the same
        changes share one encoded frame; other sockets get one message per change, each change
        encoded once."""
        self._observe_latency(records)
        batched: dict[tuple[int, ...], list[Session]] = defaultdict(list)
        single: dict[tuple[int, ...], list[Session]] = defaultdict(list)
        for sid, positions in self._route(records).items():
            session = self._sessions[sid]
            if self._admit(session):
                (batched if session.batched else single)[tuple(positions)].append(session)
        for shared, sessions in batched.items():
            chosen = [records[i] for i in shared]
            frame = encode_message(BATCH, batch_message(chosen), weight=len(chosen))
            for session in sessions:
                self.send(session, frame)
        encoded: dict[int, EncodedPacket] = {}
        for shared, sessions in single.items():
            run = PacketRun([self._single_message(encoded, i, records[i]) for i in shared])
            for session in sessions:
                self.send(session, run)

    def _observe_latency(self, records: Sequence[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        for record in records:
            if record.get("committed_at") is not None:
                self._metrics.push_seconds.observe(max(0.0, (now - record["committed_at"]).total_seconds()))

    @staticmethod
    def _single_message(encoded: dict[int, EncodedPacket], position: int, record: dict[str, Any]) -> EncodedPacket:
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
        for positions, holders in self._registry.audiences(records):
            for sid, sub_id in holders:
                session = self._sessions.get(sid)
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
        self._hold(records, pending, wanted)
        return wanted

    def _hold(self, records: Sequence[dict[str, Any]], pending: dict[str, dict[int, set[str]]],
              wanted: dict[str, list[int]]) -> None:
        hold_limit = SLOW_CONSUMER_HARD_FACTOR * self._settings.slow_consumer_backlog
        for sid, owners in pending.items():
            session, sent = self._sessions[sid], set(wanted.get(sid, ()))
            fresh = [i for i in sorted(owners) if i not in sent]
            # Nothing else bounds what is held: a replay waiting for its reader or for a database slot
            # does not take it, and the socket's queue does not show it.
            if len(session.held) + len(fresh) > hold_limit:
                self.resync(session, reason="its replay fell too far behind the live changes")
                continue
            for i in fresh:
                session.hold(records[i], owners[i])

    # --- replay and handoff ------------------------------------------------------------------------

    def _open(self, session: Session) -> bool:
        return not session.resyncing and self._sessions.get(session.sid) is session

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
            self.resync(session, reason="the event store was unreachable during replay")
        finally:
            session.replay_running = False

    async def _replay_batch(self, session: Session, readers: list[Subscription]) -> bool:
        """Send the next batch of the log to the subscriptions in ``readers``; False once the socket is
        gone or resynced."""
        assert self._log is not None
        # A batch must fit under the slow-consumer limit with room to spare. The replay goes at the
        # reader's pace: it waits for the socket to take most of what is queued.
        batch = max(1, min(self._settings.replay_batch_size, self._settings.slow_consumer_backlog // 2))
        if not await self._wait_for_room(session, batch):
            self.resync(session, reason="the connection fell too far behind")
            return False
        start = min(s.position for s in readers)
        end = max(s.upto for s in readers)
        async with self._replay_slots:
            if not self._open(session):
                return False
            records = await self._log.changes_after(start, batch, upto=end,
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
        while self.pending(session) + messages > limit:
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
        self._writer.send(session.link, encode_message(EOSE, {"id": subscription.id,
                                                              "cursor": subscription.last_tagged}))
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
            return self.send(session, frame)
        run = []
        for record in records:
            name, message = message_for(record)
            run.append(encode_message(name, {**message, **tagged}))
        return self.send(session, PacketRun(run))

    # --- slow consumers ------------------------------------------------------------------------------

    def _admit(self, session: Session) -> bool:
        """Whether more may be sent to the socket, asked once per run of changes.

        A socket is a slow consumer (resynced) when it has held ``SLOW_CONSUMER_BACKLOG`` changes or
        more for a whole ping timeout, or at once holds four times that. A reader that keeps up on
        average but is behind right after a burst of large deliveries catches up within the grace."""
        if session.resyncing:
            return False
        backlog, limit = len(session.held) + self.pending(session), self._settings.slow_consumer_backlog
        if backlog < limit:
            session.behind_since = None
            return True
        now = time.monotonic()
        if session.behind_since is None:
            session.behind_since = now
        if backlog >= SLOW_CONSUMER_HARD_FACTOR * limit or \
                now - session.behind_since >= self._settings.socket_ping_timeout_seconds:
            self.resync(session, reason="the connection fell too far behind")
            return False
        return True

    def resync(self, session: Session, *, reason: str) -> None:
        """Stop sending, tell the client where to resume each subscription, and disconnect it."""
        if not self._open(session):
            return  # already told, or gone: a replay that outlived its socket tells nobody
        session.resyncing = True
        self._metrics.slow_consumers.inc()
        positions = session.resume_positions(self.published)
        cursor = min(positions.values(), default=self.published)
        logger.warning("slow consumer sid=%s: %s; resync from cursor %d", session.sid, reason, cursor)
        self._writer.send(session.link, encode_message(RESYNC, {"cursor": cursor, "subscriptions": positions,
                                                                "reason": reason}))
        self._tasks.spawn(self._disconnect(session.sid))
