"""The JSON bodies of the server -> client Socket.IO messages, built from log records (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVENT = "chainhook:event"
ROLLBACK = "chainhook:rollback"


def event_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """``chainhook:event``: the full row. An apply or a restore means the row is canonical now."""
    return {
        "id": record["id"],
        "cursor": record["cursor"],
        "tx_hash": record["tx_hash"],
        "block_height": record["block_height"],
        "block_hash": record["block_hash"],
        "tx_index": record["tx_index"],
        "event_index": record["event_index"],
        "contract_id": record["contract_id"],
        "event_type": record["event_type"],
        "event_data": record["event_data"],
        "affected_addresses": list(record["affected_addresses"]),
        "success": record["success"],
        "timestamp": record["timestamp"].isoformat(),
        "canonical": True,
    }


def rollback_message(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "cursor": record["cursor"],
        "block_hash": record["block_hash"],
        "block_height": record["block_height"],
        "tx_hash": record["tx_hash"],
        "event_index": record["event_index"],
        "canonical": False,
    }


def message_for(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if record["change"] == "rollback":
        return ROLLBACK, rollback_message(record)
    return EVENT, event_message(record)
