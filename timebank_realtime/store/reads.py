"""The read side: the change log, for the tailer and socket replays (LogReader), and stored events,
for the history API and the health checks (HistoryReader). Neither writes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg

from ..events import EVENT_COLUMNS, SOURCE_COLUMNS, EventQuery
from .db import Database


def _event_column_list(table: str = "") -> str:
    return ", ".join(f'{table}"{name}"' for name in (*EVENT_COLUMNS, *SOURCE_COLUMNS))


# Columns an event and a block both have; the others are NULL for the kind that lacks them.
_SHARED_COLUMNS = ("block_height", "block_hash", "timestamp", "network", "chainhook_uuid")


def _change_column_list() -> str:
    """Each change with the columns of its event or block, and ``topic``: 'event' or 'block'."""
    columns = [f'coalesce(e."{name}", b."{name}") AS "{name}"' if name in _SHARED_COLUMNS else f'e."{name}"'
               for name in (*EVENT_COLUMNS, *SOURCE_COLUMNS)]
    return ", ".join(["CASE WHEN c.block_id IS NULL THEN 'event' ELSE 'block' END AS topic",
                      "coalesce(e.id, b.id) AS id", *columns, "b.transactions", "b.events AS block_events"])


_CHANGES_SQL = f"""
SELECT c."cursor", c.change, c.committed_at, {_change_column_list()}
FROM chainhook_changes c
LEFT JOIN chainhook_events e ON e.id = c.event_id
-- A lookup per block change: a plain join lets the planner hash the whole blocks table for a large read.
LEFT JOIN LATERAL (SELECT * FROM chainhook_blocks WHERE id = c.block_id) AS b ON TRUE
WHERE {{where}} ORDER BY c."cursor" LIMIT $2
"""

# The filter fields (events.FILTER_FIELDS), as SQL over the joined event (values are always bound parameters).
_MATCH_CONDITIONS = {
    "tx_hash": "e.tx_hash = ANY(${n}::text[])",
    "contract": "e.contract_id = ANY(${n}::text[])",
    "address": "e.affected_addresses && ${n}::text[]",
    "event_type": "e.event_type = ANY(${n}::text[])",
    "asset": "e.asset_identifier = ANY(${n}::text[])",
    "network": "coalesce(e.network, b.network) = ANY(${n}::text[])",
}
# What a filter's topic reads from the log: the changes of events, or of blocks.
_TOPIC_CONDITIONS = {"events": "c.event_id IS NOT NULL", "blocks": "c.block_id IS NOT NULL"}


class LogReader:
    """The change log in cursor order: where it ends, and what follows a cursor."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 10.0) -> None:
        self._db = Database(pool, acquire_timeout=acquire_timeout)

    async def last_cursor(self) -> int:
        async with self._db.connection() as conn:
            value: int = await conn.fetchval("SELECT last_cursor FROM chainhook_cursor")
            return value

    async def changes_after(self, cursor: int, limit: int, *, upto: int | None = None,
                            match: Sequence[Mapping[str, Collection[str]]] = ()) -> list[dict[str, Any]]:
        """The next ``limit`` changes after ``cursor`` (and at most ``upto``), in cursor order, with their
        event's or block's columns. ``match`` keeps only the changes any of the given filters match: a
        filter is of a topic (``{"topic": {"blocks"}}``, else events) and matches when every other field
        it names does. Without ``match``, every change."""
        conditions = ['c."cursor" > $1']
        arguments: list[Any] = [cursor, limit]
        if upto is not None:
            arguments.append(upto)
            conditions.append(f'c."cursor" <= ${len(arguments)}')
        if match:
            alternatives = []
            for one in match:
                topic = "blocks" if "blocks" in one.get("topic", ()) else "events"
                fields = [_TOPIC_CONDITIONS[topic]]
                for field, values in one.items():
                    if field != "topic":
                        arguments.append(sorted(values))
                        fields.append(_MATCH_CONDITIONS[field].format(n=len(arguments)))
                alternatives.append("(" + " AND ".join(fields) + ")")
            conditions.append("(" + " OR ".join(alternatives) + ")")
        return await self._db.fetch(_CHANGES_SQL.format(where=" AND ".join(conditions)), *arguments)


_EVENT_COLUMNS = f'id, last_cursor AS "cursor", {_event_column_list()}, canonical'


def _event_conditions(query: EventQuery) -> tuple[list[str], list[Any]]:
    """WHERE clauses for a history query; every value but ``success`` (a bool) is a bound parameter."""
    single_type = query.event_types[0] if len(query.event_types) == 1 else None
    several_types = list(query.event_types) if len(query.event_types) > 1 else None
    wanted: list[tuple[str, Any]] = [
        ("contract_id = {n}", query.contract),
        ("affected_addresses @> ARRAY[{n}::text]", query.address),
        # Equality lets the (event_type, last_cursor) index deliver rows already in cursor order.
        ("event_type = {n}", single_type),
        ("event_type = ANY({n}::text[])", several_types),
        ("tx_hash = {n}", query.tx_hash),
        ("asset_identifier = {n}", query.asset),
        ("network = {n}", query.network),
        ("block_height >= {n}", query.from_height),
        ("block_height <= {n}", query.to_height),
        ("last_cursor > {n}", query.after),
        ("last_cursor < {n}", query.before),
    ]
    conditions = [] if query.include_rolled_back else ["canonical"]
    if query.success is not None:
        # Written out, not bound: a cached generic plan could not use the partial indexes WHERE NOT success.
        conditions.append("success" if query.success else "NOT success")
    arguments: list[Any] = []
    for template, value in wanted:
        if value is not None:
            arguments.append(value)
            conditions.append(template.format(n=f"${len(arguments)}"))
    return conditions, arguments


def _page_order(query: EventQuery) -> str:
    """ORDER BY for a history page. With a height range, the same order as the distance from the log's start
    (or end): that is what the GiST index on (block_height, last_cursor) delivers, a range's rows nearest
    first, and it keeps PostgreSQL from walking the cursor index in order hoping the range's rows are spread
    along it (they sit together: cursors follow heights). Cursors are unique, so the order is the same."""
    if query.from_height is None and query.to_height is None:
        return f"last_cursor {'DESC' if query.order == 'desc' else 'ASC'}"
    # The index ranks by a float8 distance, exact below 2**53 only: so the end is 2**53, not the largest
    # bigint (from which every cursor's distance rounds alike, and pages came out of order).
    origin = str(2**53) if query.order == "desc" else "0"
    return f"last_cursor <-> {origin}::bigint"


def events_page_sql(query: EventQuery) -> tuple[str, ...]:
    """The history query and its arguments (public so that the benchmark can EXPLAIN exactly it)."""
    conditions, arguments = _event_conditions(query)
    arguments.append(query.limit + 1)
    sql = (f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE {' AND '.join(conditions) or 'TRUE'} "
           f"ORDER BY {_page_order(query)} LIMIT ${len(arguments)}")
    return (sql, *arguments)


# Each network's highest canonical block: a loose index scan over (network, block_height) WHERE
# canonical, one probe per network rather than a pass over the table.
_NETWORK_TIPS_SQL = """
WITH RECURSIVE networks AS (
    (SELECT network FROM chainhook_events WHERE canonical ORDER BY network LIMIT 1)
    UNION ALL
    SELECT (SELECT e.network FROM chainhook_events e WHERE e.canonical AND e.network > n.network
            ORDER BY e.network LIMIT 1)
    FROM networks n WHERE n.network IS NOT NULL
)
SELECT n.network, top.block_height, top.block_hash
FROM networks n CROSS JOIN LATERAL (
    SELECT block_height, block_hash FROM chainhook_events e
    WHERE e.canonical AND e.network = n.network ORDER BY block_height DESC LIMIT 1) AS top
WHERE n.network IS NOT NULL ORDER BY n.network
"""


class HistoryReader:
    """Stored events and what the service knows about its deliveries, for the history API, the
    status and health endpoints, and the heartbeat's chain tip."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 10.0) -> None:
        self._db = Database(pool, acquire_timeout=acquire_timeout)

    async def events_page(self, query: EventQuery) -> list[dict[str, Any]]:
        """Up to ``query.limit + 1`` events in cursor order (the extra row says whether more exist)."""
        return await self._db.fetch(*events_page_sql(query))

    async def event_by_id(self, event_id: int) -> dict[str, Any] | None:
        rows = await self._db.fetch(f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE id = $1", event_id)
        return rows[0] if rows else None

    async def transaction_events(self, tx_hash: str) -> list[dict[str, Any]]:
        return await self._db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE tx_hash = $1 "
            "ORDER BY canonical DESC, block_height, event_index", tx_hash)

    async def status(self) -> dict[str, Any]:
        rows = await self._db.fetch(
            "SELECT (SELECT count(*) FROM chainhook_events) AS events, "
            "(SELECT count(*) FROM chainhook_events WHERE NOT canonical) AS rolled_back, "
            "(SELECT last_cursor FROM chainhook_cursor) AS cursor")
        deliveries = await self._db.fetch(
            "SELECT chainhook_uuid, source_format, network, last_block_height, last_delivery_at, deliveries "
            "FROM chainhook_deliveries ORDER BY last_delivery_at DESC")
        return {**rows[0], "chainhooks": deliveries}

    async def schema_version(self) -> int:
        """The newest applied migration; raises DatabaseUnavailable when the server cannot be asked."""
        rows = await self._db.fetch("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")
        return int(rows[0]["version"])

    async def chain_tip(self) -> dict[str, Any]:
        """Highest canonical block seen, of any network and of each (``networks``), and when the log
        last changed."""
        async with self._db.connection() as conn:
            tips = await conn.fetch(_NETWORK_TIPS_SQL)
            changed_at = await conn.fetchval(
                'SELECT committed_at FROM chainhook_changes ORDER BY "cursor" DESC LIMIT 1')
        networks = {t["network"]: {"block_height": t["block_height"], "block_hash": t["block_hash"]} for t in tips}
        highest = max(networks.values(), key=lambda tip: tip["block_height"], default={})
        return {
            "block_height": highest.get("block_height"),
            "block_hash": highest.get("block_hash"),
            "last_delivery_at": changed_at,
            "networks": networks,
        }
