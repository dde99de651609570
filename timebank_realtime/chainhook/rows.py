"""Row building shared by both formats: a transaction's context, affected addresses, contracts of
assets, decoded Clarity values, the tip height. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..events import BlockSummary, EventRow
from .clarity import ClarityDecodeError, decode_hex
from .models import V1Block, V2Block
from .principals import is_principal

# Transaction rows have no event of their own; -1 keeps them apart from real event positions.
TRANSACTION_ROW_INDEX = -1


def tip_height(heights: Iterable[int | None]) -> int | None:
    """The highest of the given block heights (blocks applied, or deliveries' tips), if any."""
    return max((height for height in heights if height is not None), default=None)


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def block_summaries(blocks: Iterable[V1Block | V2Block], events: Mapping[str, int],
                    transactions: Mapping[int, int] | None = None) -> tuple[BlockSummary, ...]:
    """The applied blocks for the blocks topic, each hash once (the first), in payload order.
    ``events``: per block hash; ``transactions``: per block's position in the payload, when the
    blocks no longer hold them (streamed), else counted from the blocks."""
    summaries: dict[str, BlockSummary] = {}
    for number, block in enumerate(blocks):
        identifier = block.block_identifier
        if identifier.hash not in summaries:
            summaries[identifier.hash] = BlockSummary(
                block_height=identifier.index, block_hash=identifier.hash, timestamp=_timestamp(block.timestamp),
                transactions=len(block.transactions) if transactions is None else transactions.get(number, 0),
                events=events.get(identifier.hash, 0))
    return tuple(summaries.values())


def events_per_block(rows: Iterable[EventRow]) -> Counter[str]:
    """Rows other than a transaction's own, per block hash."""
    return Counter(row.block_hash for row in rows if row.event_index != TRANSACTION_ROW_INDEX)


def contract_of_asset(asset_identifier: str) -> str:
    """``SP….token::name`` -> ``SP….token``."""
    return asset_identifier.split("::", 1)[0]


def principals_in(value: Any) -> list[str]:
    """Every checksum-valid principal string found anywhere inside a decoded value, in order."""
    found: list[str] = []
    _collect_principals(value, found)
    return found


def _collect_principals(value: Any, found: list[str]) -> None:
    # Plain calls, not nested generators: this runs over every event's value.
    if isinstance(value, str):
        if value.startswith("S") and is_principal(value):
            found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_principals(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_principals(item, found)


def addresses(*groups: Iterable[str | None]) -> tuple[str, ...]:
    """The non-empty addresses of all groups, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for group in groups:
        for address in group:
            if address:
                seen.setdefault(address, None)
    return tuple(seen)


def with_decoded_value(data: dict[str, Any]) -> dict[str, Any]:
    """Add ``value`` decoded from ``raw_value`` when Chainhook sent only hex."""
    raw = data.get("raw_value")
    if "value" in data or not isinstance(raw, str):
        return data
    try:
        return {**data, "value": decode_hex(raw)}
    except ClarityDecodeError as error:
        # A value we cannot decode must not cost the delivery: keep the hex and say why.
        return {**data, "value": None, "decode_error": str(error)}


@dataclass(frozen=True, slots=True)
class TxContext:
    """What every row of one transaction shares."""

    block: V1Block | V2Block
    tx_hash: str
    tx_index: int
    sender: str
    success: bool
    contract_id: str
    block_time: datetime = field(init=False)  # the block's, converted once for all its rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_time", _timestamp(self.block.timestamp))

    def row(self, event_index: int, contract_id: str, event_type: str, data: dict[str, Any],
            addresses: tuple[str, ...]) -> EventRow:
        identifier = self.block.block_identifier
        return EventRow(self.tx_hash, identifier.index, identifier.hash, self.tx_index, event_index, contract_id,
                        event_type, data, addresses, self.success, self.block_time)
