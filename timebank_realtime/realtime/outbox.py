"""Sending to one socket: every message counted, replayed and held changes tagged with the
subscriptions they are for, and a reader that falls too far behind resynced (told where to resume,
then disconnected) rather than buffered without bound.

Each send is synchronous, so a socket's messages leave in the order of the calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..metrics import Metrics
from ..settings import Settings
from .messages import BATCH, RESYNC, batch_message, message_for
from .sessions import Session, tag, tag_runs
from .tasks import TaskSet
from .wire import Link, Outgoing, PacketRun, encode_message

logger = logging.getLogger(__name__)

# A socket holding this many times SLOW_CONSUMER_BACKLOG is resynced at once, without a grace period.
SLOW_CONSUMER_HARD_FACTOR = 4


class Writer(Protocol):
    def send(self, link: Link, packet: Outgoing) -> bool: ...

    def pending(self, link: Link) -> int: ...


class Outbox:
    def __init__(self, settings: Settings, metrics: Metrics, writer: Writer, *, sessions: dict[str, Session],
                 tasks: TaskSet, disconnect: Callable[[str], Coroutine[Any, Any, None]],
                 published: Callable[[], int]) -> None:
        self._settings = settings
        self._metrics = metrics
        self._writer = writer
        self._sessions = sessions
        self._tasks = tasks
        self._disconnect = disconnect
        self._published = published
        self._sent: dict[str, Any] = {}  # the messages counter of each event name

    def is_open(self, session: Session) -> bool:
        return not session.resyncing and self._sessions.get(session.sid) is session

    def pending(self, session: Session) -> int:
        return self._writer.pending(session.link)

    def send(self, session: Session, packet: Outgoing) -> bool:
        """Send to a socket that is not being resynced, counting the messages by name."""
        if not self.is_open(session) or not self._writer.send(session.link, packet):
            return False
        for one in packet.packets:
            counter = self._sent.get(one.event)
            if counter is None:
                counter = self._sent[one.event] = self._metrics.messages.labels(event=one.event)
            counter.inc()
        return True

    def send_marker(self, session: Session, name: str, message: dict[str, Any]) -> None:
        """A message that carries no change (eose, resync): not counted, and sent even while resyncing."""
        self._writer.send(session.link, encode_message(name, message))

    def send_tagged(self, session: Session, records: list[dict[str, Any]], owners: list[frozenset[str]]) -> bool:
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

    async def wait_for_room(self, session: Session, messages: int) -> bool:
        """Wait until ``messages`` more fit under the slow-consumer limit; False if the socket does not
        drain within the ping timeout."""
        limit = self._settings.slow_consumer_backlog
        deadline = time.monotonic() + self._settings.socket_ping_timeout_seconds
        while self.pending(session) + messages > limit:
            if time.monotonic() > deadline or not self.is_open(session):
                return False
            await asyncio.sleep(0.01)
        return True

    # --- slow consumers ------------------------------------------------------------------------------

    def admit(self, session: Session) -> bool:
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
        if not self.is_open(session):
            return  # already told, or gone: a replay that outlived its socket tells nobody
        session.resyncing = True
        self._metrics.slow_consumers.inc()
        positions = session.resume_positions(self._published())
        cursor = min(positions.values(), default=self._published())
        logger.warning("slow consumer sid=%s: %s; resync from cursor %d", session.sid, reason, cursor)
        self.send_marker(session, RESYNC, {"cursor": cursor, "subscriptions": positions, "reason": reason})
        self._tasks.spawn(self._disconnect(session.sid))
