"""The server's messages and its answers, one pydantic model each (docs/protocol.md, "Server messages").

Models accept fields they do not know (``extra="allow"``), so a newer server that adds one does not
stop an older client. A change carries ``kind``, the name its own message would have had, so that a
handler can switch on it (or ``match`` on the class).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter

ChangeKind = Literal["event", "rollback", "block", "block_rollback"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("event", "rollback", "block", "block_rollback")
# The wire tags of a replayed (or held) change: which subscriptions of the socket it is for.
TAG_FIELDS = ("subscription", "subscriptions")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Event(Message):
    """``chainhook:event``: a stored row, on insert and again when a rolled-back row is restored."""

    kind: Literal["event"] = "event"
    id: int
    cursor: int
    tx_hash: str
    block_height: int
    block_hash: str
    tx_index: int
    event_index: int
    contract_id: str
    event_type: str
    event_data: dict[str, Any]
    affected_addresses: list[str]
    success: bool
    timestamp: datetime
    network: str
    chainhook_uuid: str = ""
    asset_identifier: str | None = None
    canonical: Literal[True] = True


class Rollback(Message):
    """``chainhook:rollback``: a row that left the canonical chain, with the fields filters match on."""

    kind: Literal["rollback"] = "rollback"
    id: int
    cursor: int
    block_hash: str
    block_height: int
    tx_hash: str
    event_index: int
    contract_id: str
    event_type: str
    affected_addresses: list[str]
    network: str
    asset_identifier: str | None = None
    canonical: Literal[False] = False


class _BlockFields(Message):
    topic: Literal["block"] = "block"
    id: int
    cursor: int
    network: str
    block_height: int
    block_hash: str
    timestamp: datetime
    # What the delivery that first applied the block held: its transactions and their stored events.
    transactions: int
    events: int


class Block(_BlockFields):
    """``chainhook:block``: a block applied (or restored) by a delivery, for ``{"topic": "blocks"}``."""

    kind: Literal["block"] = "block"
    canonical: Literal[True] = True


class BlockRollback(_BlockFields):
    """``chainhook:block_rollback``: a block rolled back."""

    kind: Literal["block_rollback"] = "block_rollback"
    canonical: Literal[False] = False


Change = Event | Rollback | Block | BlockRollback


def change_kind(body: Mapping[str, Any]) -> ChangeKind:
    """What a change of a batch frame would have come as on its own: ``canonical`` tells an apply from
    a rollback, ``topic: block`` a block from an event."""
    if body.get("topic") == "block":
        return "block" if body.get("canonical") else "block_rollback"
    return "event" if body.get("canonical") else "rollback"


def _kind_of(body: Any) -> str:
    if isinstance(body, Mapping):
        return str(body.get("kind") or change_kind(body))
    return str(getattr(body, "kind", ""))


# A change from its body: ``kind`` when it has one, else what ``canonical`` and ``topic`` say.
WireChange = Annotated[Annotated[Event, Tag("event")] | Annotated[Rollback, Tag("rollback")]
                       | Annotated[Block, Tag("block")] | Annotated[BlockRollback, Tag("block_rollback")],
                       Discriminator(_kind_of)]
_CHANGE: TypeAdapter[Change] = TypeAdapter(WireChange)


def parse_change(body: Mapping[str, Any], kind: ChangeKind | None = None) -> Change:
    """A change from its wire body, without its tags; ``kind`` from the message's name, else from the
    body (as in a batch frame). Raises pydantic.ValidationError."""
    fields = {key: value for key, value in body.items() if key not in TAG_FIELDS}
    return _CHANGE.validate_python({**fields, "kind": kind or change_kind(body)})


class BatchFrame(Message):
    """``chainhook:batch``: several changes in cursor order, tagged as a whole when replayed."""

    changes: list[WireChange]
    subscription: str | None = None
    subscriptions: list[str] | None = None

    def tags(self) -> dict[str, Any]:
        return self.model_dump(include=set(TAG_FIELDS), exclude_none=True)


class Eose(Message):
    """``chainhook:eose``: the end of a subscription's replay."""

    id: str
    cursor: int


class ChainTip(Message):
    block_height: int | None = None
    block_hash: str | None = None
    last_delivery_at: datetime | None = None


class Heartbeat(Message):
    """``chainhook:heartbeat``: every ``HEARTBEAT_SECONDS`` to every socket."""

    cursor: int
    tip: ChainTip | None = None
    tips: dict[str, ChainTip] = {}
    server_time: datetime


class Resync(Message):
    """``chainhook:resync``: the server disconnects next; ``subscriptions`` maps each server
    subscription id to the cursor it can resume from, missing nothing and repeating nothing."""

    cursor: int
    subscriptions: dict[str, int]
    reason: str


class SubscribeAck(Message):
    """The server took a subscription: it replays up to ``cursor``, then sends its eose."""

    ok: Literal[True]
    id: str
    cursor: int
    filter: dict[str, Any]


class ErrorDetail(Message):
    code: str
    message: str


class SubscribeError(Message):
    """The server refused a subscription (or an unsubscribe): ``error.code`` is machine-readable."""

    ok: Literal[False]
    error: ErrorDetail


SubscribeReply = SubscribeAck | SubscribeError


def parse_reply(body: Any) -> SubscribeReply:
    """The answer to ``subscribe``; a body that is neither is a refusal with code ``invalid_reply``."""
    if isinstance(body, Mapping) and body.get("ok") is True:
        return SubscribeAck.model_validate(body)
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return SubscribeError.model_validate(body)
    return SubscribeError(ok=False, error=ErrorDetail(code="invalid_reply", message=f"unexpected answer {body!r}"))
