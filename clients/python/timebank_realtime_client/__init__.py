"""timebank-realtime's asyncio client: every change exactly once, in cursor order, across reconnects,
resyncs and restarts (docs/python-client.md)."""

from .client import ConnectionState, SubscriptionRefused, TimebankClient, TokenSource
from .filters import Filter, FilterShapeError, normalize_filter
from .models import (
    BatchFrame,
    Block,
    BlockRollback,
    ChainTip,
    Change,
    ChangeKind,
    Eose,
    ErrorDetail,
    Event,
    Heartbeat,
    Resync,
    Rollback,
    SubscribeAck,
    SubscribeError,
    SubscribeReply,
    change_kind,
    parse_change,
    parse_reply,
)
from .routing import Handler, Since, Subscription
from .stores import CursorStore, JsonFileCursorStore, MemoryCursorStore, default_cursor_file
from .watch import TransactionStatus, TransactionWatch, next_status

__all__ = [
    "BatchFrame", "Block", "BlockRollback", "ChainTip", "Change", "ChangeKind", "ConnectionState", "CursorStore",
    "Eose", "ErrorDetail", "Event", "Filter", "FilterShapeError", "Handler", "Heartbeat", "JsonFileCursorStore",
    "MemoryCursorStore", "Resync", "Rollback", "Since", "SubscribeAck", "SubscribeError", "SubscribeReply",
    "Subscription", "SubscriptionRefused", "TimebankClient", "TokenSource", "TransactionStatus", "TransactionWatch",
    "change_kind", "default_cursor_file", "next_status", "normalize_filter", "parse_change", "parse_reply",
]
