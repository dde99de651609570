"""Fan-out: which socket gets which change, when, and in what order; replays and their hand-off to
live. Getting it onto the socket, and slow consumers, are the outbox's (``outbox.py``).

Delivery guarantee (docs/architecture.md): a subscription gets every matching change with a cursor
greater than its ``since`` exactly once and in cursor order: first the replay from the log, then the
live changes held while the replay ran, then ``chainhook:eose``, then live changes. A socket gets each
change once for all of its subscriptions that want it at the time: one replay per socket reads for all
of its replaying subscriptions, and a message names every subscription it is for.

Nothing here knows sockets: messages go out through the outbox's ``Writer`` (the wire, or an
in-memory one in tests), and each send is synchronous, so a socket's order is the order of the calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import DatabaseUnavailable
from ..metrics import Metrics
from ..settings import Settings
from ..store.reads import LogReader
from .messages import BATCH, EOSE, batch_message, message_for
from .outbox import SLOW_CONSUMER_HARD_FACTOR, Outbox, Writer
from .sessions import Session, Subscription, replay_groups
from .subscriptions import Filter, SubscriptionRegistry
from .tasks import TaskSet
from .wire import EncodedPacket, PacketRun, encode_message

logger = logging.getLogger(__name__)

# Replays of one socket whose positions are within this many replay batches (in cursors) read together.
REPLAY_MERGE_SPAN_BATCHES = 4


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
        self._sessions = sessions
        self._registry = registry
        self._tasks = tasks
        self.outbox = Outbox(settings, metrics, writer, sessions=sessions, tasks=tasks, disconnect=disconnect,
                             published=lambda: self.published)
        # Replays wait their turn for a database connection instead of timing out on the pool, which
        # the webhook and the tailer share: at most half the pool reads for replays (one connection
        # of a pool of one).
        self._replay_slots = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))
        self._log: LogReader | None = None
        self._pushed: Pushed | None = None

    def bind(self, log: LogReader, pushed: Pushed) -> None:
        self._log, self._pushed = log, pushed

    @property
    def published(self) -> int:
        """The last cursor handed to the sockets: a live subscription was given every match up to
        here. The tailer moves it once ``publish`` returns, so during a run it is the run's start."""
        assert self._pushed is not None
        return self._pushed.cursor

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
            if self.outbox.admit(session):
                (batched if session.batched else single)[tuple(positions)].append(session)
        for shared, sessions in batched.items():
            chosen = [records[i] for i in shared]
            frame = encode_message(BATCH, batch_message(chosen), weight=len(chosen))
            for session in sessions:
                self.outbox.send(session, frame)
        encoded: dict[int, EncodedPacket] = {}
        for shared, sessions in single.items():
            run = PacketRun([self._single_message(encoded, i, records[i]) for i in shared])
            for session in sessions:
                self.outbox.send(session, run)

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
                self.outbox.resync(session, reason="its replay fell too far behind the live changes")
                continue
            for i in fresh:
                session.hold(records[i], owners[i])

    # --- replay and handoff ------------------------------------------------------------------------

    async def _go_live(self, session: Session, subscription: Subscription) -> None:
        # A task of its own only so that it runs after the ack is queued, like a replay's handoff.
        if self.outbox.is_open(session) and session.subscriptions.get(subscription.id) is subscription \
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
            while self.outbox.is_open(session):
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
            self.outbox.resync(session, reason="the event store was unreachable during replay")
        finally:
            session.replay_running = False

    async def _replay_batch(self, session: Session, readers: list[Subscription]) -> bool:
        """Send the next batch of the log to the subscriptions in ``readers``; False once the socket is
        gone or resynced."""
        assert self._log is not None
        # A batch must fit under the slow-consumer limit with room to spare. The replay goes at the
        # reader's pace: it waits for the socket to take most of what is queued.
        batch = max(1, min(self._settings.replay_batch_size, self._settings.slow_consumer_backlog // 2))
        if not await self.outbox.wait_for_room(session, batch):
            self.outbox.resync(session, reason="the connection fell too far behind")
            return False
        start = min(s.position for s in readers)
        end = max(s.upto for s in readers)
        async with self._replay_slots:
            if not self.outbox.is_open(session):
                return False
            records = await self._log.changes_after(start, batch, upto=end,
                                                    match=[s.filter.as_match() for s in readers])
        # Judged after the wait for a slot, during which live changes may have been held for it.
        if not self.outbox.admit(session):
            return False
        # Subscriptions added meanwhile join at the next batch; removed ones are no longer owed anything.
        readers = [s for s in readers if session.subscriptions.get(s.id) is s]
        chosen, owners = [], []
        for record in records:
            record_owners = self._replay_owners(session, readers, record)
            if record_owners:
                chosen.append(record)
                owners.append(record_owners)
        if chosen and not self.outbox.send_tagged(session, chosen, owners):
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

    def _hand_off(self, session: Session, subscription: Subscription) -> bool:
        """Send what was held for a subscription whose replay is done, then go live and send eose, all
        without an await. Every message tagged for it comes before its eose; none after."""
        held = session.held_for(subscription.id)
        if held:
            if not self.outbox.admit(session):
                return False
            records = [one.record for one in held]
            owners = [frozenset(session.take_held(record["cursor"])) for record in records]
            if not self.outbox.send_tagged(session, records, owners):
                return False
        subscription.live = True
        self.outbox.send_marker(session, EOSE, {"id": subscription.id, "cursor": subscription.last_tagged})
        return True

