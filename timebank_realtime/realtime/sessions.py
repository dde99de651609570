"""Per-connection state: subscriptions replaying or live, held changes, rate limiting, resume
positions (pure).

What a socket is owed, per subscription: every matching change above its ``floor``, once. A change
reaches a subscription either in a message tagged with it (a replay or a held change) or in an
untagged live message, which the client routes to every subscription whose filter matches (holding
it until the subscription's eose when it is still replaying).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .auth import Grant
from .subscriptions import Filter

if TYPE_CHECKING:
    from .wire import Link


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
    # The hub's cursor when it was registered: the replay covers (floor, upto], publish the rest.
    upto: int
    # While replaying: every matching change up to here has been sent (or queued) for it.
    position: int
    # The newest cursor sent tagged for it (at least its ack's cursor): the cursor its eose carries.
    last_tagged: int = 0
    live: bool = False

    @property
    def replay_done(self) -> bool:
        return self.position >= self.upto


@dataclass(slots=True)
class HeldChange:
    """A live change for subscriptions still replaying, that no live subscription of the socket took."""

    record: dict[str, Any]
    owners: set[str]


@dataclass(slots=True)
class Session:
    sid: str
    grant: Grant | None
    bucket: TokenBucket
    # Where its messages go (the wire's).
    link: Link
    # Asked for ``chainhook:batch`` frames (one per run of changes) instead of a message per change.
    batched: bool = False
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # Held live changes by cursor, in cursor order (publish adds them in order).
    held: dict[int, HeldChange] = field(default_factory=dict)
    # Whether the socket's replay task is running (one per socket: replays that overlap share reads
    # and messages).
    replay_running: bool = False
    # Set once the socket fell too far behind: nothing more is sent, it is being disconnected.
    resyncing: bool = False
    # Since when (monotonic seconds) the socket has held SLOW_CONSUMER_BACKLOG changes or more.
    behind_since: float | None = None

    def replaying(self) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if not s.live]

    def hold(self, record: dict[str, Any], owners: Iterable[str]) -> None:
        held = self.held.get(record["cursor"])
        if held is None:
            self.held[record["cursor"]] = HeldChange(record, set(owners))
        else:
            held.owners.update(owners)

    def take_held(self, cursor: int) -> set[str]:
        """The subscriptions a held change was for, now that it is being sent; empty if none."""
        held = self.held.pop(cursor, None)
        return held.owners if held is not None else set()

    def held_for(self, sub_id: str) -> list[HeldChange]:
        return [held for held in self.held.values() if sub_id in held.owners]

    def drop_subscription(self, sub_id: str) -> None:
        self.subscriptions.pop(sub_id, None)
        for cursor, held in list(self.held.items()):
            held.owners.discard(sub_id)
            if not held.owners:
                del self.held[cursor]

    def resume_positions(self, published: int) -> dict[str, int]:
        """Where each subscription can resume from with ``since`` and miss nothing: what the socket
        was given. A live subscription was given every match up to ``published`` (the end of the
        last run of changes handed to the socket), a replaying one its replay position."""
        return {s.id: (max(published, s.floor) if s.live else s.position)
                for s in self.subscriptions.values()}


TaggedRun = tuple[frozenset[str], list[dict[str, Any]]]


def replay_groups(readers: list[Subscription], *, span: int) -> list[list[Subscription]]:
    """Replaying subscriptions in groups that read the log together: each group's positions lie
    within ``span`` cursors of its first, the group furthest behind first. Reading together sends a
    change they share once; keeping far-apart replays apart keeps a short one from waiting for a
    long one."""
    groups: list[list[Subscription]] = []
    for reader in sorted(readers, key=lambda s: s.position):
        if groups and reader.position - groups[-1][0].position <= span:
            groups[-1].append(reader)
        else:
            groups.append([reader])
    return groups


def tag_runs(records: list[dict[str, Any]], owners: list[frozenset[str]]) -> list[TaggedRun]:
    """Consecutive records with the same owners, grouped: each group goes out under one tag."""
    runs: list[TaggedRun] = []
    for record, record_owners in zip(records, owners, strict=True):
        if runs and runs[-1][0] == record_owners:
            runs[-1][1].append(record)
        else:
            runs.append((record_owners, [record]))
    return runs


def tag(owners: frozenset[str]) -> dict[str, Any]:
    """The tag of a replayed or held message: ``subscription`` for one owner (the shape since the
    first version), ``subscriptions`` (sorted) for several."""
    if len(owners) == 1:
        return {"subscription": next(iter(owners))}
    return {"subscriptions": sorted(owners, key=_id_order)}


def _id_order(sub_id: str) -> tuple[int, str]:
    number = sub_id.rpartition("-")[2]
    return (int(number) if number.isdecimal() else 0, sub_id)
