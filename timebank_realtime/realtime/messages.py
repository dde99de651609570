"""The JSON bodies of the server -> client Socket.IO messages, built from log records (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..events import network_tips, stored_event

EVENT = "chainhook:event"
ROLLBACK = "chainhook:rollback"
BLOCK = "chainhook:block"
BLOCK_ROLLBACK = "chainhook:block_rollback"
EOSE = "chainhook:eose"
HEARTBEAT = "chainhook:heartbeat"
RESYNC = "chainhook:resync"
BATCH = "chainhook:batch"


def event_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """``chainhook:event``: the full row. An apply or a restore means the row is canonical now."""
    return {**stored_event(record), "canonical": True}


def rollback_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """``chainhook:rollback``: which row left the canonical chain, with the fields filters match on,
    so that a client can route it to its own subscriptions."""
    return {
        "id": record["id"],
        "cursor": record["cursor"],
        "block_hash": record["block_hash"],
        "block_height": record["block_height"],
        "tx_hash": record["tx_hash"],
        "event_index": record["event_index"],
        "contract_id": record["contract_id"],
        "event_type": record["event_type"],
        "affected_addresses": list(record["affected_addresses"]),
        "network": record["network"],
        "asset_identifier": record["asset_identifier"],
        "canonical": False,
    }


def block_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """``chainhook:block`` (applied or restored: canonical) or ``chainhook:block_rollback``: a block and
    its counts. ``topic`` tells it from an event in a batch frame."""
    return {
        "topic": "block",
        "id": record["id"],
        "cursor": record["cursor"],
        "network": record["network"],
        "block_height": record["block_height"],
        "block_hash": record["block_hash"],
        "timestamp": record["timestamp"].isoformat(),
        "transactions": record["transactions"],
        "events": record["block_events"],
        "canonical": record["change"] != "rollback",
    }


def message_for(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if record.get("topic") == "block":
        return (BLOCK_ROLLBACK if record["change"] == "rollback" else BLOCK), block_message(record)
    if record["change"] == "rollback":
        return ROLLBACK, rollback_message(record)
    return EVENT, event_message(record)


def batch_message(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``chainhook:batch``: several changes in cursor order, each the body of its own ``chainhook:event``
    (``canonical: true``) or ``chainhook:rollback`` (``canonical: false``) message, or of a block's
    (``topic: block``)."""
    return {"changes": [message_for(record)[1] for record in records]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def heartbeat_message(cursor: int, tip: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "cursor": cursor,
        # The highest block of any network (kept for clients that read it); ``tips`` has each network's.
        "tip": {
            "block_height": tip.get("block_height"),
            "block_hash": tip.get("block_hash"),
            "last_delivery_at": _iso(tip.get("last_delivery_at")),
        },
        "tips": network_tips(tip),
        "server_time": now.isoformat(),
    }
