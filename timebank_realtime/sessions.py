"""Per-connection state: subscriptions replaying or live, rate limiting, resume positions (pure)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .auth import Grant
from .subscriptions import Filter


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, holding at most ``rate`` (so a burst of one second's worth)."""

    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate=rate, tokens=rate, updated=now)

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(slots=True)
class Subscription:
    id: str
    filter: Filter
    # The cursor after which this subscription wants changes: its ``since``, or the head when it
    # started live.
    floor: int
    live: bool = False
    # Live changes that arrived while the replay was still running, in cursor order.
    held: deque[dict[str, Any]] = field(default_factory=deque)
    # The last cursor sent for this subscription while replaying.
    position: int = 0


@dataclass(slots=True)
class Session:
    sid: str
    grant: Grant | None
    bucket: TokenBucket
    # The Engine.IO session the messages are queued on.
    eio_sid: str = ""
    # Asked for ``chainhook:batch`` frames (one per run of changes) instead of a message per change.
    batched: bool = False
    # The connection of a websocket-first session, which messages may be written to directly.
    transport: Any = None
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # Cursors this socket was sent while one of its subscriptions replayed: a held change the socket
    # already got through another subscription is not sent twice.
    sent_while_replaying: set[int] = field(default_factory=set)
    # Set once the socket fell too far behind: nothing more is sent, it is being disconnected.
    resyncing: bool = False
    # Since when (monotonic seconds) the socket has held SLOW_CONSUMER_BACKLOG changes or more.
    behind_since: float | None = None

    @property
    def replaying(self) -> bool:
        return any(not s.live for s in self.subscriptions.values())

    def note_sent(self, cursors: Iterable[int]) -> None:
        if self.replaying:
            self.sent_while_replaying.update(cursors)
        elif self.sent_while_replaying:
            self.sent_while_replaying.clear()

    def resume_positions(self, live_position: int) -> dict[str, int]:
        """Where each subscription can resume from with ``since`` and miss nothing."""
        return {s.id: (max(live_position, s.floor) if s.live else s.position)
                for s in self.subscriptions.values()}
