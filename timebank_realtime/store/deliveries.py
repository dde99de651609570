"""The write path: each delivery stored in one transaction, in the change log's cursor order.

How cursor order equals commit order: a delivery's first statement locks the single
``chainhook_cursor`` row, and the lock is held until commit, so deliveries take cursors one after
the other and commit in that order (one that rolls back leaves the numbers to the next). A tailer
reading ``cursor > last`` therefore always sees a gapless prefix of the log and can never skip a
change that commits later with a smaller cursor. Knowing its cursors up front, a delivery writes
each row once, with ``last_cursor`` already set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from ..events import EVENT_COLUMNS, Delivery, DeliveryHeader, EventRow
from .db import NOTIFY_CHANNEL, Database
from .values import copy_records, insert_arguments, key_columns, pg_safe


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    applied: int
    duplicates: int
    rolled_back: int
    restored: int
    last_cursor: int | None
    block_changes: int = 0  # blocks applied, rolled back or restored


_LOCK_CURSOR_SQL = "SELECT last_cursor FROM chainhook_cursor FOR UPDATE"

# Rows of the rolled-back blocks that are canonical, minus those this delivery applies again, newest
# first (a reorg unwinds the chain), each taking the next cursor.
_ROLLBACK_SQL = """
WITH doomed AS (
    SELECT e.id, row_number() OVER (ORDER BY e.block_height DESC, e.tx_index DESC, e.event_index DESC) AS n
    FROM chainhook_events AS e
    WHERE e.block_hash = ANY($1::text[]) AND e.canonical
      AND NOT EXISTS (
          SELECT 1 FROM unnest($2::text[], $3::text[], $4::int[]) AS k(block_hash, tx_hash, event_index)
          WHERE k.block_hash = e.block_hash AND k.tx_hash = e.tx_hash AND k.event_index = e.event_index))
UPDATE chainhook_events AS e SET canonical = FALSE, last_cursor = $5 + doomed.n
FROM doomed WHERE e.id = doomed.id
RETURNING e.id, e.last_cursor
"""

_EXISTING_SQL = """
SELECT e.id, e.block_hash, e.tx_hash, e.event_index, e.canonical
FROM unnest($1::text[], $2::text[], $3::int[]) AS k(block_hash, tx_hash, event_index)
JOIN chainhook_events AS e
  ON e.block_hash = k.block_hash AND e.tx_hash = k.tx_hash AND e.event_index = k.event_index
"""

_INSERT_SQL = """
INSERT INTO chainhook_events (tx_hash, block_height, block_hash, tx_index, event_index, contract_id,
                              event_type, event_data, affected_addresses, success, "timestamp",
                              last_cursor, source_format, network, chainhook_uuid)
SELECT u.tx_hash, u.block_height, u.block_hash, u.tx_index, u.event_index, u.contract_id, u.event_type,
       u.event_data::jsonb, ARRAY(SELECT jsonb_array_elements_text(u.addresses::jsonb)), u.success,
       u.ts, u.last_cursor, $13, $14, $15
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bool[], $11::timestamptz[], $12::bigint[])
     AS u(tx_hash, block_height, block_hash, tx_index, event_index, contract_id, event_type,
          event_data, addresses, success, ts, last_cursor)
RETURNING id, last_cursor
"""

# After the rows of an append were COPYed with cursors head+1..last row ($1, $2): log the delivery's new
# and restored blocks ($8-$12, each hash once, in payload order) with the cursors after the rows, log
# the rows, move the cursor to the end, record the delivery and notify, all in one statement (the rows
# are the only ones with a cursor in that range). Returns the last cursor ($1 if nothing changed).
_APPEND_TAIL_SQL = """
WITH {blocks_logged}, logged AS (
    INSERT INTO chainhook_changes ("cursor", event_id, change)
    SELECT last_cursor, id, 'apply' FROM chainhook_events WHERE last_cursor > $1 AND last_cursor <= $2
), tip AS (
    SELECT $2 + (SELECT count(*) FROM blocks_logged) AS last
), moved AS (
    UPDATE chainhook_cursor SET last_cursor = tip.last FROM tip WHERE tip.last > $1
), recorded AS ({record_delivery})
SELECT last, CASE WHEN last > $1 THEN pg_notify($7, last::text) END FROM tip
"""  # {blocks_logged}, {record_delivery}: the statements below, with this one's parameter numbers

_RESTORE_SQL = """
UPDATE chainhook_events AS e SET canonical = TRUE, last_cursor = u.last_cursor
FROM unnest($1::bigint[], $2::bigint[]) AS u(id, last_cursor) WHERE e.id = u.id
"""

_DELIVERY_UPSERT = """
INSERT INTO chainhook_deliveries AS d (chainhook_uuid, source_format, network, last_block_height, last_delivery_at,
                                      deliveries)
VALUES (${uuid}, ${fmt}, ${network}, ${height}, now(), 1)
ON CONFLICT (chainhook_uuid) DO UPDATE
SET source_format = EXCLUDED.source_format,
    network = EXCLUDED.network,
    last_block_height = GREATEST(d.last_block_height, EXCLUDED.last_block_height),
    last_delivery_at = EXCLUDED.last_delivery_at,
    deliveries = d.deliveries + 1
"""
_RECORD_DELIVERY_SQL = _DELIVERY_UPSERT.format(uuid=1, fmt=2, network=3, height=4)

# The blocks a delivery applies (arrays of height, hash, time, transactions, events: each hash once, in
# payload order) that are new or come back after a rollback, each taking the next cursor after
# {after} and logged as an apply or a restore.
_BLOCKS_LOGGED_CTE = """
blocks_given AS (
    SELECT * FROM unnest(${heights}::bigint[], ${hashes}::text[], ${times}::timestamptz[], ${transactions}::int[],
                         ${events}::int[])
             WITH ORDINALITY AS g(block_height, block_hash, ts, transactions, events, n)
), blocks_changed AS (
    SELECT g.*, b.id AS existing_id, row_number() OVER (ORDER BY g.n) AS k
    FROM blocks_given g LEFT JOIN chainhook_blocks b ON b.block_hash = g.block_hash
    WHERE b.id IS NULL OR NOT b.canonical
), blocks_inserted AS (
    INSERT INTO chainhook_blocks (network, block_height, block_hash, "timestamp", transactions, events, last_cursor,
                                  chainhook_uuid)
    SELECT ${network}, block_height, block_hash, ts, transactions, events, ${after} + k, ${uuid}
    FROM blocks_changed WHERE existing_id IS NULL
    RETURNING id, last_cursor
), blocks_restored AS (
    UPDATE chainhook_blocks AS b SET canonical = TRUE, last_cursor = ${after} + c.k
    FROM blocks_changed c WHERE b.id = c.existing_id
    RETURNING b.id, b.last_cursor
), blocks_logged AS (
    INSERT INTO chainhook_changes ("cursor", block_id, change)
    SELECT last_cursor, id, 'apply' FROM blocks_inserted
    UNION ALL SELECT last_cursor, id, 'restore' FROM blocks_restored
    RETURNING "cursor"
)"""
_APPLY_BLOCKS_SQL = ("WITH " + _BLOCKS_LOGGED_CTE.format(heights=1, hashes=2, times=3, transactions=4, events=5,
                                                         network=6, after=7, uuid=8).strip()
                     + '\nSELECT "cursor" FROM blocks_logged')
_APPEND_TAIL_SQL = _APPEND_TAIL_SQL.format(
    blocks_logged=_BLOCKS_LOGGED_CTE.format(heights=8, hashes=9, times=10, transactions=11, events=12, network=5,
                                            after=2, uuid=3).strip(),
    record_delivery=_DELIVERY_UPSERT.format(uuid=3, fmt=4, network=5, height=6))

# The canonical blocks of the rolled-back hashes ($1) but those the delivery applies again ($2), newest
# first, each taking the next cursor after $3 and logged as a rollback.
_ROLL_BACK_BLOCKS_SQL = """
WITH doomed AS (
    SELECT id, row_number() OVER (ORDER BY block_height DESC, id DESC) AS n
    FROM chainhook_blocks WHERE block_hash = ANY($1::text[]) AND canonical AND NOT block_hash = ANY($2::text[])
), moved AS (
    UPDATE chainhook_blocks AS b SET canonical = FALSE, last_cursor = $3 + d.n FROM doomed d WHERE b.id = d.id
    RETURNING b.id, b.last_cursor
)
INSERT INTO chainhook_changes ("cursor", block_id, change) SELECT last_cursor, id, 'rollback' FROM moved
RETURNING "cursor"
"""

_RECORD_CHANGES_SQL = """
INSERT INTO chainhook_changes ("cursor", event_id, change)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
"""

# The order of the records copy_records makes.
_COPY_COLUMNS = (*EVENT_COLUMNS, "last_cursor", "source_format", "network", "chainhook_uuid")


def _block_columns(delivery: DeliveryHeader) -> list[list[Any]]:
    """The delivery's blocks as the arrays the block statements take."""
    blocks = delivery.blocks
    return [[b.block_height for b in blocks], [pg_safe(b.block_hash) for b in blocks], [b.timestamp for b in blocks],
            [b.transactions for b in blocks], [b.events for b in blocks]]


async def _copy_rows(conn: asyncpg.Connection, records: Iterable[tuple[Any, ...]]) -> None:
    """COPY ``records`` into chainhook_events, abandoned as soon as the connection is lost.

    asyncpg's COPY waits for the socket to accept more data; a connection lost while it waits never
    does, and the COPY (with the delivery) would hang for ever. The termination listener ends the wait
    as a TimeoutError, which db.py reports as DatabaseUnavailable."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as watch:
        copying = True

        def on_lost(_conn: object) -> None:
            if copying:  # called soon after the loss, possibly after the COPY ended on its own
                watch.reschedule(loop.time())

        conn.add_termination_listener(on_lost)
        try:
            await conn.copy_records_to_table("chainhook_events", columns=_COPY_COLUMNS, records=records)
        finally:
            copying = False
            conn.remove_termination_listener(on_lost)


class DeliveryWriter:
    """Stores deliveries: the only writer of events and of the change log (the webhook, the importer)."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 10.0) -> None:
        self._db = Database(pool, acquire_timeout=acquire_timeout)

    async def apply_delivery(self, delivery: Delivery) -> DeliveryResult:
        """Store one delivery in one transaction: rollbacks, then applies, then cursors, then NOTIFY."""
        async with self._db.connection() as conn:
            # Two deliveries touching the same rows in different orders can deadlock; PostgreSQL
            # aborts one of them, and retrying it is always safe because it changed nothing.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(asyncpg.DeadlockDetectedError),
                stop=stop_after_attempt(3),
                reraise=True,
            ):
                with attempt:
                    return await self._apply_in_transaction(conn, delivery)
        raise AssertionError("unreachable: AsyncRetrying reraises")

    async def append_stream(self, rows: Iterable[EventRow], delivery: DeliveryHeader) -> DeliveryResult | None:
        """Store a streamed delivery whose rows are all new, in one transaction, writing rows while
        they are still being parsed (``delivery`` is filled in as they are). None, with nothing
        written, if some row was stored before. Whatever ``rows`` raises (an invalid transaction, a
        shape that cannot stream) rolls the transaction back and reaches the caller."""
        async with self._db.connection() as conn:
            return await self._append(conn, rows, delivery)

    async def _apply_in_transaction(self, conn: asyncpg.Connection, delivery: Delivery) -> DeliveryResult:
        rows = delivery.distinct_events
        if rows and not delivery.rollback_block_hashes:
            appended = await self._append(conn, rows, delivery)
            if appended is not None:
                return appended
        async with conn.transaction():
            # First statement: from here to commit no other delivery can take cursors.
            head: int = await conn.fetchval(_LOCK_CURSOR_SQL)
            rolled_back = await self._roll_back(conn, delivery, rows, head)
            blocks_rolled_back = await self._roll_back_blocks(conn, delivery, head + len(rolled_back))
            cursor = head + len(rolled_back) + blocks_rolled_back
            existing = {(r["block_hash"], r["tx_hash"], r["event_index"]): r
                        for r in await conn.fetch(_EXISTING_SQL, *key_columns(rows))} if rows else {}
            new_rows = [r for r in rows if r.natural_key not in existing]
            # Cursors in payload (chain) order, whether a row is new or comes back after a rollback.
            changed = [r for r in rows if r.natural_key not in existing or not existing[r.natural_key]["canonical"]]
            cursor_of = {row.natural_key: cursor + n for n, row in enumerate(changed, start=1)}
            inserted = await self._insert(conn, new_rows, cursor_of, delivery)
            restored = [(existing[r.natural_key]["id"], cursor_of[r.natural_key])
                        for r in changed if r.natural_key in existing]
            if restored:
                await conn.execute(_RESTORE_SQL, [r[0] for r in restored], [r[1] for r in restored])
            changes = rolled_back + sorted(inserted + [(i, c, "restore") for i, c in restored], key=lambda c: c[1])
            await self._record_changes(conn, changes)
            blocks_applied = await self._apply_blocks(conn, delivery, cursor + len(changed))
            last = cursor + len(changed) + blocks_applied
            if last > head:
                await self._move_cursor(conn, last)
            await conn.execute(_RECORD_DELIVERY_SQL, pg_safe(delivery.chainhook_uuid), delivery.format,
                               pg_safe(delivery.network), delivery.tip_height)
        return DeliveryResult(
            applied=len(inserted),
            duplicates=delivery.repeats + len(rows) - len(changed),
            rolled_back=len(rolled_back),
            restored=len(restored),
            last_cursor=last if last > head else None,
            block_changes=blocks_rolled_back + blocks_applied,
        )

    async def _append(self, conn: asyncpg.Connection, rows: Iterable[EventRow],
                      delivery: DeliveryHeader) -> DeliveryResult | None:
        """The common case, fast, whether the delivery was parsed whole or is being streamed: every
        row is new. COPY them with their cursors as they come, then log them and the delivery's
        blocks, move the cursor, record the delivery and notify, in one statement. None (and nothing
        written) if some row was stored before: a repeated delivery or a restore, which the general
        path sorts out. ``delivery`` is read as the rows are taken, since a streamed one is only
        complete after the last."""
        try:
            async with conn.transaction():
                head: int = await conn.fetchval(_LOCK_CURSOR_SQL)
                await _copy_rows(conn, copy_records(rows, head, delivery))
                # The delivery is complete now (streamed, its blocks are known after the last row).
                last_row = head + delivery.rows
                last: int = await conn.fetchval(
                    _APPEND_TAIL_SQL, head, last_row, pg_safe(delivery.chainhook_uuid), delivery.format,
                    pg_safe(delivery.network), delivery.tip_height, NOTIFY_CHANNEL, *_block_columns(delivery))
        except asyncpg.UniqueViolationError:
            return None
        return DeliveryResult(applied=delivery.rows, duplicates=delivery.repeats, rolled_back=0, restored=0,
                              last_cursor=last if last > head else None, block_changes=last - last_row)

    async def _roll_back(self, conn: asyncpg.Connection, delivery: Delivery, rows: Sequence[EventRow],
                         head: int) -> list[tuple[int, int, str]]:
        if not delivery.rollback_block_hashes:
            return []
        hashes = sorted({pg_safe(h) for h in delivery.rollback_block_hashes})
        # Rows this same delivery applies again stay canonical: the net effect is what counts.
        kept = [r for r in rows if r.block_hash in set(hashes)]
        records = await conn.fetch(_ROLLBACK_SQL, hashes, *key_columns(kept), head)
        return sorted(((r["id"], r["last_cursor"], "rollback") for r in records), key=lambda c: c[1])

    async def _insert(self, conn: asyncpg.Connection, rows: Sequence[EventRow], cursor_of: dict[Any, int],
                      delivery: Delivery) -> list[tuple[int, int, str]]:
        if not rows:
            return []
        records = await conn.fetch(_INSERT_SQL, *insert_arguments(rows, [cursor_of[r.natural_key] for r in rows],
                                                                    delivery))
        return [(r["id"], r["last_cursor"], "apply") for r in records]

    async def _record_changes(self, conn: asyncpg.Connection, changes: list[tuple[int, int, str]]) -> None:
        if changes:
            await conn.execute(_RECORD_CHANGES_SQL, [c[1] for c in changes], [c[0] for c in changes],
                               [c[2] for c in changes])

    async def _move_cursor(self, conn: asyncpg.Connection, last: int) -> None:
        await conn.execute("UPDATE chainhook_cursor SET last_cursor = $1", last)
        # Delivered to listeners only when (and if) this transaction commits.
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))

    async def _apply_blocks(self, conn: asyncpg.Connection, delivery: DeliveryHeader, after: int) -> int:
        """Log the delivery's new and restored blocks with cursors after ``after``; how many."""
        blocks = delivery.blocks
        if not blocks:
            return 0
        logged = await conn.fetch(_APPLY_BLOCKS_SQL, *_block_columns(delivery), pg_safe(delivery.network), after,
                                  pg_safe(delivery.chainhook_uuid))
        return len(logged)

    async def _roll_back_blocks(self, conn: asyncpg.Connection, delivery: Delivery, after: int) -> int:
        """Log the rollback of the delivery's rolled-back blocks with cursors after ``after``; how many."""
        if not delivery.rollback_block_hashes:
            return 0
        logged = await conn.fetch(_ROLL_BACK_BLOCKS_SQL, sorted({pg_safe(h) for h in delivery.rollback_block_hashes}),
                                  [pg_safe(b.block_hash) for b in delivery.blocks], after)
        return len(logged)
