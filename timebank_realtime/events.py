"""The shared vocabulary of the service: what an event row is, what a delivery holds, which event
types and filter fields exist. The parsers produce these, the store writes and reads them, the
socket and HTTP edges name their fields. Pure: no I/O, no dependencies on either side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

EVENT_TYPES = (
    "print_event",
    "stx_transfer_event",
    "stx_mint_event",
    "stx_burn_event",
    "stx_lock_event",
    "ft_transfer_event",
    "ft_mint_event",
    "ft_burn_event",
    "nft_transfer_event",
    "nft_mint_event",
    "nft_burn_event",
    "data_var_set_event",
    "data_map_insert_event",
    "data_map_update_event",
    "data_map_delete_event",
    "contract_call",
    "contract_deployment",
)

# What a subscription (and a replay read of the log) can filter on.
# Most selective first: the index key of a filter is the first of these it names.
FILTER_FIELDS = ("tx_hash", "asset", "contract", "address", "event_type", "network")

Format = Literal["v1", "v2"]


class RawJson(str):
    """JSON text already serialized (and made safe for PostgreSQL): stored as jsonb as it is."""

    def __reduce__(self) -> tuple[type[RawJson], tuple[str]]:
        # By the constructor: a third cheaper to pickle than copyreg's generic path for str subclasses.
        return RawJson, (str(self),)


@dataclass(frozen=True, slots=True)
class EventRow:
    tx_hash: str
    block_height: int
    block_hash: str
    tx_index: int
    event_index: int
    contract_id: str
    event_type: str
    # RawJson once serialized for the store (store/values.py), as import's parse workers send rows.
    event_data: dict[str, Any] | RawJson
    affected_addresses: tuple[str, ...]
    success: bool
    timestamp: datetime

    @property
    def natural_key(self) -> tuple[str, str, int]:
        return (self.block_hash, self.tx_hash, self.event_index)

    def __reduce__(self) -> tuple[type[EventRow], tuple[Any, ...]]:
        # import's parse workers pickle rows by the million: rebuilt from their fields in order, they
        # unpickle about twice as fast as by the default for frozen slotted dataclasses (a fields()
        # lookup and a setattr per field, per row).
        return EventRow, tuple(getattr(self, name) for name in EVENT_COLUMNS)


# The columns of chainhook_events that hold an EventRow: named as its fields, in their order. The
# store adds its own (id, last_cursor, canonical, source_format) around them.
EVENT_COLUMNS = tuple(f.name for f in fields(EventRow))
# Columns shown with every stored event that are not the row's own: the delivery's network and
# Chainhook, and the FT/NFT asset the database derives from the row (``SP….token::name``, or None).
SOURCE_COLUMNS = ("network", "chainhook_uuid", "asset_identifier")



def stored_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored event as the history API and the socket messages show it: its id, the cursor of its
    newest change, its row, and whether it is canonical."""
    event = {"id": record["id"], "cursor": record["cursor"]}
    event.update((name, record[name]) for name in EVENT_COLUMNS)
    event.update((name, record[name]) for name in SOURCE_COLUMNS)
    event["affected_addresses"] = list(record["affected_addresses"])
    event["timestamp"] = record["timestamp"].isoformat()
    event["canonical"] = record.get("canonical", True)
    return event


def network_tips(tip: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each network's highest block: ``{"mainnet": {"block_height": …, "block_hash": …}, …}``."""
    return {network: {"block_height": t["block_height"], "block_hash": t["block_hash"]}
            for network, t in sorted(tip.get("networks", {}).items())}


@dataclass(frozen=True, slots=True)
class BlockSummary:
    """A block a delivery applies, for the blocks topic: the transactions Chainhook sent for it (those
    its predicate matched) and the events (rows other than a transaction's own) they hold."""

    block_height: int
    block_hash: str
    timestamp: datetime
    transactions: int
    events: int


@dataclass(slots=True)
class DeliveryHeader:
    """Everything about a delivery but its rows: its format and chainhook, the blocks it rolls back and
    applies, how many rows it holds. Parsed whole, a delivery knows all of it at once (Delivery);
    streamed, the parser fills it in as it reads the body: the format before the first row, the rest
    once the last row has been taken."""

    format: Format | None = None
    chainhook_uuid: str = ""
    network: str = ""  # mainnet, testnet, ...: see chainhook/networks.py
    rollback_block_hashes: tuple[str, ...] = ()
    apply_blocks: int = 0
    skipped_events: int = 0
    tip_height: int | None = None
    blocks: tuple[BlockSummary, ...] = ()  # the applied blocks, each hash once, in payload order
    rows: int = 0  # rows of a natural key of their own: the ones the store keeps
    repeats: int = 0  # rows repeating the natural key of an earlier one


@dataclass(slots=True)
class Delivery(DeliveryHeader):
    """A delivery parsed whole: roll these blocks back, then apply these rows. ``rows`` and
    ``repeats`` are counted from ``events``; ``distinct_events`` holds the first row of each natural
    key, in order (a payload can repeat a row, and the store keeps the first)."""

    format: Format  # always known once the whole body is parsed
    events: tuple[EventRow, ...] = ()
    distinct_events: tuple[EventRow, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: dict[tuple[str, str, int], EventRow] = {}
        for row in self.events:
            first.setdefault(row.natural_key, row)
        self.distinct_events = tuple(first.values())
        self.rows = len(first)
        self.repeats = len(self.events) - len(first)


DEFAULT_LIMIT = 100  # events in a history page unless ``limit`` says otherwise


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A history query (GET /api/events): what the HTTP edge parses and the store answers."""

    contract: str | None = None
    address: str | None = None
    event_types: tuple[str, ...] = ()
    tx_hash: str | None = None
    asset: str | None = None
    network: str | None = None
    from_height: int | None = None
    to_height: int | None = None
    success: bool | None = None
    include_rolled_back: bool = False
    after: int | None = None
    before: int | None = None
    limit: int = DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "asc"
