"""The client rules of docs/protocol.md (Client rules), applied to what a connection receives: which
of our subscriptions a message is for, what waits for an eose, and what was delivered already. Pure:
no I/O; what is to be handed to a subscription's handler goes to ``deliver``, in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..realtime.subscriptions import Filter

Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]


@dataclass(eq=False)
class ClientSubscription:
    """One subscription as the application sees it; it outlives any one connection."""

    key: int
    filter_payload: dict[str, Any]
    filter: Filter
    handler: Handler
    since: int | str
    last_cursor: int | None = None
    server_id: str | None = None
    ack_cursor: int | None = None
    live: bool = False
    buffer: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    active: bool = True

    def reset_for_connection(self) -> None:
        self.server_id, self.ack_cursor, self.live = None, None, False
        self.buffer.clear()


def change_kind(change: Mapping[str, Any]) -> str:
    """What a change in a batch frame would have come as on its own: event, rollback, block, block_rollback."""
    kind = "block" if change.get("topic") == "block" else "event"
    if change["canonical"]:
        return kind
    return "block_rollback" if kind == "block" else "rollback"


class ChangeRouter:
    def __init__(self, subscriptions: list[ClientSubscription],
                 deliver: Callable[[ClientSubscription, str, dict[str, Any]], None]) -> None:
        self._subscriptions = subscriptions
        self._hand_over = deliver
        self._early_eose: dict[Any, dict[str, Any]] = {}
        self._unclaimed: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def new_connection(self) -> None:
        self._early_eose.clear()
        self._unclaimed.clear()
        for subscription in list(self._subscriptions):
            subscription.reset_for_connection()

    def acknowledged(self, subscription: ClientSubscription, ack: Mapping[str, Any]) -> None:
        """The server took the subscription: route what came for it before the ack was handled."""
        subscription.server_id = ack["id"]
        subscription.ack_cursor = ack["cursor"]
        # Messages that came before the ack was handled: replayed ones go now, live ones wait for eose.
        waiting, subscription.buffer = subscription.buffer, []
        for kind, message in waiting:
            self._route(subscription, kind, message, replayed=False)
        for kind, message in self._unclaimed.pop(ack["id"], []):
            self._route(subscription, kind, message, replayed=True)
        # Socket.IO hands us the ack after the packets that followed it, so eose may be here already.
        if self._early_eose.pop(ack["id"], None) is not None:
            self._go_live(subscription)

    def on_batch(self, frame: dict[str, Any]) -> None:
        tag: dict[str, Any] = {key: frame[key] for key in ("subscription", "subscriptions") if key in frame}
        for change in frame["changes"]:
            self.on_change(change_kind(change), {**change, **tag})

    def on_change(self, kind: str, message: dict[str, Any]) -> None:
        # Synchronous on purpose: routing state changes happen in arrival order.
        tags = _tags_of(message)
        if tags:
            for tag in tags:
                owner = next((s for s in self._subscriptions if s.server_id == tag), None)
                if owner is None:
                    self._unclaimed.setdefault(tag, []).append((kind, message))
                else:
                    self._route(owner, kind, message, replayed=True)
            return
        for subscription in self._subscriptions:
            if subscription.filter.matches(message):
                self._route(subscription, kind, message, replayed=False)

    def _route(self, subscription: ClientSubscription, kind: str, message: dict[str, Any], *,
               replayed: bool) -> None:
        """Replayed history goes straight out (it comes in order); anything newer that arrives before
        eose, live or held, waits so that it can be put in cursor order."""
        acked = subscription.server_id is not None
        history = replayed and acked and message["cursor"] <= (subscription.ack_cursor or 0)
        if subscription.live or history:
            self._deliver(subscription, kind, message)
        else:
            subscription.buffer.append((kind, message))

    def _deliver(self, subscription: ClientSubscription, kind: str, message: dict[str, Any]) -> None:
        last = subscription.last_cursor
        if last is not None and message["cursor"] <= last:
            return
        subscription.last_cursor = message["cursor"]
        self._hand_over(subscription, kind, message)

    def on_eose(self, message: dict[str, Any]) -> None:
        for subscription in self._subscriptions:
            if subscription.server_id == message.get("id"):
                self._go_live(subscription)
                return
        self._early_eose[message.get("id")] = message

    def _go_live(self, subscription: ClientSubscription) -> None:
        waiting = sorted(subscription.buffer, key=lambda item: item[1]["cursor"])
        subscription.buffer = []
        for kind, change in waiting:
            self._deliver(subscription, kind, change)
        subscription.live = True


def _tags_of(message: Mapping[str, Any]) -> list[str]:
    """The subscriptions a replayed or held message is for: ``subscription`` names one,
    ``subscriptions`` several; a live message has neither."""
    several = message.get("subscriptions")
    if isinstance(several, list):
        return [tag for tag in several if isinstance(tag, str)]
    one = message.get("subscription")
    return [one] if isinstance(one, str) else []
