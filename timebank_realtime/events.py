"""The shared vocabulary of the service: what an event row is, what a delivery holds, which event
types and filter fields exist. The parsers produce these, the store writes and reads them, the
socket and HTTP edges name their fields. Pure: no I/O, no dependencies on either side.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
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
FILTER_FIELDS = ("tx_hash", "contract", "address", "event_type")

Format = Literal["v1", "v2"]


@dataclass(frozen=True, slots=True)
class EventRow:
    tx_hash: str
    block_height: int
    block_hash: str
    tx_index: int
    event_index: int
    contract_id: str
    event_type: str
    event_data: dict[str, Any]
    affected_addresses: tuple[str, ...]
    success: bool
    timestamp: datetime

    @property
    def natural_key(self) -> tuple[str, str, int]:
        return (self.block_hash, self.tx_hash, self.event_index)


# The columns of chainhook_events that hold an EventRow: named as its fields, in their order. The
# store adds its own (id, last_cursor, canonical, source_format) around them.
EVENT_COLUMNS = tuple(f.name for f in fields(EventRow))


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one webhook asks of the store: roll these blocks back, then apply these rows."""

    format: Format
    chainhook_uuid: str
    rollback_block_hashes: tuple[str, ...]
    events: tuple[EventRow, ...]
    apply_blocks: int
    skipped_events: int
    tip_height: int | None
