"""The client rules of docs/protocol.md ("Client rules"), applied to what a connection receives: which of
our subscriptions a change is for, what waits for an eose, what was delivered already, and where each
subscription resumes. Pure: no I/O; what is to be handed to a subscription's handler goes to
``deliver``, in cursor order, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .filters import Filter
from .models import Change, Eose, Resync, SubscribeAck

Handler = Callable[[Change], Awaitable[None] | None]
Since = int | str  # a cursor, or "now"


@dataclass(eq=False)
class Subscription:
    """One subscription as the application sees it; it outlives any one connection."""

    payload: dict[str, Any]
    filter: Filter
    handler: Handler
    since: Since
    # Names the cursor in the store; None: not persisted.
    key: str | None = None
    # The last change handed to the handler queue: a reconnect resumes after it, repeats are dropped.
    last_cursor: int | None = None
    # The last change whose handler returned: what the store holds.
    handled_cursor: int | None = None
    # Where a resync said to resume from, for the next subscribe only.
    resume_from: int | None = None
    # ``since`` of the last subscribe sent for it: where it resumed.
    subscribed_since: Since | None = None
    server_id: str | None = None
    ack_cursor: int | None = None
    live: bool = False
    buffer: list[Change] = field(default_factory=list)
    active: bool = True

    def resume_since(self) -> Since:
        """``since`` for the next subscribe: a resync's position, else after the last change taken,
        else what the application asked for."""
        if self.resume_from is not None:
            return self.resume_from
        return self.last_cursor if self.last_cursor is not None else self.since

    def reset_for_connection(self) -> None:
        self.server_id, self.ack_cursor, self.live = None, None, False
        self.buffer.clear()


class ChangeRouter:
    def __init__(self, subscriptions: list[Subscription], deliver: Callable[[Subscription, Change], None]) -> None:
        self._subscriptions = subscriptions
        self._hand_over = deliver
        self._early_eose: set[str] = set()
        self._unclaimed: dict[str, list[Change]] = {}

    def new_connection(self) -> None:
        self._early_eose.clear()
        self._unclaimed.clear()
        # Forget the old connection for every subscription first: one still marked live (or holding an
        # old server id) would take changes meant for the others while they resubscribe.
        for subscription in self._subscriptions:
            subscription.reset_for_connection()

    def acknowledged(self, subscription: Subscription, ack: SubscribeAck) -> int | None:
        """The server took the subscription: route what came for it before the ack was handled. Returns
        where it starts (the ack's cursor for "now", else ``since``) when this is its first ack."""
        subscription.server_id, subscription.ack_cursor = ack.id, ack.cursor
        subscription.resume_from = None
        start = None
        if subscription.last_cursor is None:
            since = subscription.since
            start = subscription.last_cursor = ack.cursor if since == "now" else int(since)
        # Untagged changes that came before the ack: those not above its cursor are the replay's, and
        # dropped as repeats at eose; the others wait for eose.
        waiting, subscription.buffer = subscription.buffer, []
        for change in waiting:
            self._route(subscription, change, replayed=False)
        for change in self._unclaimed.pop(ack.id, []):
            self._route(subscription, change, replayed=True)
        # Socket.IO hands us the ack after the packets that followed it, so eose may be here already.
        if ack.id in self._early_eose:
            self._early_eose.discard(ack.id)
            self._go_live(subscription)
        return start

    def on_change(self, change: Change, tags: list[str]) -> None:
        # Synchronous on purpose: routing state changes happen in arrival order.
        if tags:
            for tag in tags:
                owner = self._owner(tag)
                if owner is None:
                    self._unclaimed.setdefault(tag, []).append(change)
                else:
                    self._route(owner, change, replayed=True)
            return
        for subscription in self._subscriptions:
            if subscription.filter.matches(change):
                self._route(subscription, change, replayed=False)

    def on_eose(self, eose: Eose) -> None:
        owner = self._owner(eose.id)
        if owner is None:
            self._early_eose.add(eose.id)
        else:
            self._go_live(owner)

    def on_resync(self, resync: Resync) -> None:
        """Everything the server gave this socket came before the resync: each subscription it names
        resumes from its position there."""
        for subscription in self._subscriptions:
            if subscription.server_id in resync.subscriptions:
                subscription.resume_from = resync.subscriptions[subscription.server_id]

    def _owner(self, server_id: str) -> Subscription | None:
        return next((s for s in self._subscriptions if s.server_id == server_id), None)

    def _route(self, subscription: Subscription, change: Change, *, replayed: bool) -> None:
        """Replayed history goes straight out (it comes in order); anything newer that arrives before
        eose, live or held, waits so that it can be put in cursor order."""
        history = replayed and subscription.ack_cursor is not None and change.cursor <= subscription.ack_cursor
        if subscription.live or history:
            self._deliver(subscription, change)
        else:
            subscription.buffer.append(change)

    def _deliver(self, subscription: Subscription, change: Change) -> None:
        last = subscription.last_cursor
        if last is not None and change.cursor <= last:
            return
        subscription.last_cursor = change.cursor
        self._hand_over(subscription, change)

    def _go_live(self, subscription: Subscription) -> None:
        waiting = sorted(subscription.buffer, key=lambda change: change.cursor)
        subscription.buffer = []
        for change in waiting:
            self._deliver(subscription, change)
        subscription.live = True


def tags_of(body: dict[str, Any]) -> list[str]:
    """The subscriptions a replayed or held change is for: ``subscription`` names one, ``subscriptions``
    several; a live change has neither."""
    several = body.get("subscriptions")
    if isinstance(several, list):
        return [tag for tag in several if isinstance(tag, str)]
    one = body.get("subscription")
    return [one] if isinstance(one, str) else []
