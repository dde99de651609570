"""Event rows as the values PostgreSQL takes: text it can hold, jsonb text, the arrays of a bulk
INSERT and the records of a COPY (in EVENT_COLUMNS order). Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from ..events import DeliveryHeader, EventRow, RawJson


def pg_safe(text: str) -> str:
    """PostgreSQL text cannot hold NUL or lone surrogates; replace them rather than lose the event."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def _pg_safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return pg_safe(value)
    if isinstance(value, dict):
        return {pg_safe(str(k)): _pg_safe_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pg_safe_value(v) for v in value]
    return value


def _jsonb_text(value: Any) -> RawJson:
    if type(value) is RawJson:  # serialized before (with_serialized_data)
        return value
    try:
        # orjson only writes valid UTF-8, so NUL is the one thing PostgreSQL could still refuse.
        text = orjson.dumps(value).decode()
        if "\\u0000" not in text:
            return RawJson(text)
    except TypeError:  # integers beyond 64 bits, lone surrogates, ...: the careful path
        pass
    return RawJson(json.dumps(_pg_safe_value(value), ensure_ascii=False, separators=(",", ":")))


def with_serialized_data(row: EventRow) -> EventRow:
    """The row with its event_data as the jsonb text the store writes: one string, which crosses to
    another process several times cheaper than the dicts and is not serialized again when stored."""
    # Not dataclasses.replace, which costs more than the serializing.
    return EventRow(row.tx_hash, row.block_height, row.block_hash, row.tx_index, row.event_index, row.contract_id,
                    row.event_type, _jsonb_text(row.event_data), row.affected_addresses, row.success,
                    row.timestamp)


def insert_arguments(rows: Sequence[EventRow], cursors: Sequence[int], delivery: DeliveryHeader) -> list[Any]:
    return [
        [pg_safe(r.tx_hash) for r in rows],
        [r.block_height for r in rows],
        [pg_safe(r.block_hash) for r in rows],
        [r.tx_index for r in rows],
        [r.event_index for r in rows],
        [pg_safe(r.contract_id) for r in rows],
        [r.event_type for r in rows],
        [_jsonb_text(r.event_data) for r in rows],
        [_jsonb_text(list(r.affected_addresses)) for r in rows],
        [r.success for r in rows],
        [r.timestamp for r in rows],
        list(cursors),
        delivery.format,
        pg_safe(delivery.network),
        pg_safe(delivery.chainhook_uuid),
    ]


def copy_records(rows: Iterable[EventRow], head: int, delivery: DeliveryHeader) -> Iterator[tuple[Any, ...]]:
    """Rows for COPY, in payload (chain) order, taking cursors head+1, head+2, ... (made as COPY
    consumes them, so a large delivery is not serialized twice in memory). The delivery's format and
    source (Chainhook uuid, network) are read per row: a streamed delivery settles them before its
    first row (see chainhook/streaming.py)."""
    return ((pg_safe(r.tx_hash), r.block_height, pg_safe(r.block_hash), r.tx_index, r.event_index,
             pg_safe(r.contract_id), r.event_type, _jsonb_text(r.event_data),
             [pg_safe(a) for a in r.affected_addresses], r.success, r.timestamp, head + n, delivery.format or "",
             pg_safe(delivery.network), pg_safe(delivery.chainhook_uuid))
            for n, r in enumerate(rows, start=1))


def key_columns(rows: Sequence[EventRow]) -> list[list[Any]]:
    return [[pg_safe(r.block_hash) for r in rows], [pg_safe(r.tx_hash) for r in rows],
            [r.event_index for r in rows]]
