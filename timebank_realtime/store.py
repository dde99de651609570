"""PostgreSQL: the only module that holds SQL. Pool, migrations, delivery writes and log reads.

How cursor order equals commit order: a delivery does all its row work first, then, as its last
step, increments the single ``chainhook_cursor`` row. That row lock is held until commit, so a
second delivery cannot take cursors until the first has committed (or rolled back, in which case
it reuses the same numbers). A tailer reading ``cursor > last`` therefore always sees a gapless
prefix of the log and can never skip a change that commits later with a smaller cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from .errors import DatabaseUnavailable, MigrationError
from .migrations import Migration
from .normalize import Delivery, EventRow

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chainhook_changes"
# Arbitrary, fixed: every process migrating this database takes the same lock.
MIGRATION_LOCK_KEY = 0x7B_A7C0_0001

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


@asynccontextmanager
async def _unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int, max_size: int, connect_timeout: float,
                      retry_seconds: float) -> asyncpg.Pool:
    """Open the pool, retrying while the server is still starting (compose brings both up at once)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(_UNAVAILABLE),
        stop=stop_after_delay(retry_seconds),
        wait=wait_exponential(multiplier=0.2, max=3),
        reraise=True,
        before_sleep=lambda state: logger.warning("database not reachable yet (%s); retrying",
                                                  state.outcome.exception() if state.outcome else ""),
    ):
        with attempt:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout, init=_init_connection
            )
    return pool


# --- migrations -----------------------------------------------------------------------------


async def apply_migrations(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply what is missing, under an advisory lock; refuse a database whose history differs."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    INTEGER PRIMARY KEY,
                   name       TEXT        NOT NULL,
                   checksum   TEXT        NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        _check_history(applied, migrations)
        newly_applied: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            newly_applied.append(migration.version)
        return newly_applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


def _check_history(applied: dict[int, Any], migrations: Sequence[Migration]) -> None:
    known = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{row['name']}, which this version does not "
                "ship: it was migrated by a newer timebank-realtime"
            )
        if row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} was changed after it was applied "
                f"(database checksum {row['checksum'][:12]}…, file {migration.checksum[:12]}…); "
                "applied migrations are never edited: add a new one instead"
            )


# --- deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    applied: int
    duplicates: int
    rolled_back: int
    restored: int
    last_cursor: int | None


_ROLLBACK_SQL = """
UPDATE chainhook_events AS e SET canonical = FALSE
WHERE e.block_hash = ANY($1::text[]) AND e.canonical
  AND NOT EXISTS (
      SELECT 1 FROM unnest($2::text[], $3::text[], $4::int[]) AS k(block_hash, tx_hash, event_index)
      WHERE k.block_hash = e.block_hash AND k.tx_hash = e.tx_hash AND k.event_index = e.event_index)
RETURNING e.id, e.block_height, e.tx_index, e.event_index
"""

_UPSERT_SQL = """
INSERT INTO chainhook_events (tx_hash, block_height, block_hash, tx_index, event_index, contract_id,
                              event_type, event_data, affected_addresses, success, "timestamp",
                              source_format)
SELECT u.tx_hash, u.block_height, u.block_hash, u.tx_index, u.event_index, u.contract_id, u.event_type,
       u.event_data::jsonb, ARRAY(SELECT jsonb_array_elements_text(u.addresses::jsonb)), u.success,
       u.ts, $12
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bool[], $11::timestamptz[])
     AS u(tx_hash, block_height, block_hash, tx_index, event_index, contract_id, event_type,
          event_data, addresses, success, ts)
ON CONFLICT ON CONSTRAINT chainhook_events_natural_key
DO UPDATE SET canonical = TRUE WHERE NOT chainhook_events.canonical
RETURNING id, (xmax = 0) AS inserted, block_hash, tx_hash, event_index
"""

_TAKE_CURSORS_SQL = """
UPDATE chainhook_cursor SET last_cursor = last_cursor + $1 RETURNING last_cursor - $1
"""

_RECORD_CHANGES_SQL = """
INSERT INTO chainhook_changes ("cursor", event_id, change)
SELECT $1 + u.ordinality, u.event_id, u.change
FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS u(event_id, change, ordinality)
"""


_CHANGES_SQL = """
SELECT c."cursor", c.change, c.committed_at, e.id, e.tx_hash, e.block_height, e.block_hash, e.tx_index,
       e.event_index, e.contract_id, e.event_type, e.event_data, e.affected_addresses, e.success, e."timestamp"
FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id
WHERE {where} ORDER BY c."cursor" LIMIT $2
"""

# Subscription filter fields, as SQL over the joined event (values are always bound parameters).
_MATCH_CONDITIONS = {
    "tx_hash": "e.tx_hash = ANY(${n}::text[])",
    "contract": "e.contract_id = ANY(${n}::text[])",
    "address": "e.affected_addresses && ${n}::text[]",
    "event_type": "e.event_type = ANY(${n}::text[])",
}


def _pg_safe(text: str) -> str:
    """PostgreSQL text cannot hold NUL or lone surrogates; replace them rather than lose the event."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def _pg_safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return _pg_safe(value)
    if isinstance(value, dict):
        return {_pg_safe(str(k)): _pg_safe_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pg_safe_value(v) for v in value]
    return value


def _jsonb_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text or _pg_safe(text) != text:
        text = json.dumps(_pg_safe_value(value), ensure_ascii=False, separators=(",", ":"))
    return text


def _unique_rows(rows: Sequence[EventRow]) -> tuple[list[EventRow], int]:
    """First occurrence of each natural key; also how many repeats the payload itself held."""
    seen: dict[tuple[str, str, int], EventRow] = {}
    for row in rows:
        seen.setdefault(row.natural_key, row)
    return list(seen.values()), len(rows) - len(seen)


def _upsert_arguments(rows: Sequence[EventRow], source_format: str) -> list[Any]:
    return [
        [_pg_safe(r.tx_hash) for r in rows],
        [r.block_height for r in rows],
        [_pg_safe(r.block_hash) for r in rows],
        [r.tx_index for r in rows],
        [r.event_index for r in rows],
        [_pg_safe(r.contract_id) for r in rows],
        [r.event_type for r in rows],
        [_jsonb_text(r.event_data) for r in rows],
        [_jsonb_text(list(r.affected_addresses)) for r in rows],
        [r.success for r in rows],
        [r.timestamp for r in rows],
        source_format,
    ]


class EventStore:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 10.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def apply_delivery(self, delivery: Delivery) -> DeliveryResult:
        """Store one delivery in one transaction: rollbacks, then applies, then cursors, then NOTIFY."""
        async with _unavailable_as_domain_error():
            # Two deliveries touching the same rows in different orders can deadlock; PostgreSQL
            # aborts one of them, and retrying it is always safe because it changed nothing.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(asyncpg.DeadlockDetectedError),
                stop=stop_after_attempt(3),
                reraise=True,
            ):
                with attempt:
                    async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                        return await self._apply_in_transaction(conn, delivery)
        raise AssertionError("unreachable: AsyncRetrying reraises")

    async def _apply_in_transaction(self, conn: asyncpg.Connection, delivery: Delivery) -> DeliveryResult:
        rows, repeats = _unique_rows(delivery.events)
        payload_position = {row.natural_key: position for position, row in enumerate(rows)}
        async with conn.transaction():
            rolled_back = await self._roll_back(conn, delivery, rows)
            # Inserted in payload (chain) order, so ids follow the chain within a delivery.
            returned = await conn.fetch(_UPSERT_SQL, *_upsert_arguments(rows, delivery.format))
            returned = sorted(returned, key=lambda r: payload_position[(r["block_hash"], r["tx_hash"],
                                                                         r["event_index"])])
            changes: list[tuple[int, str]] = [(event_id, "rollback") for event_id in rolled_back]
            changes += [(r["id"], "apply" if r["inserted"] else "restore") for r in returned]
            last_cursor = await self._record_changes(conn, changes)
        inserted = sum(1 for r in returned if r["inserted"])
        return DeliveryResult(
            applied=inserted,
            duplicates=repeats + len(rows) - len(returned),
            rolled_back=len(rolled_back),
            restored=len(returned) - inserted,
            last_cursor=last_cursor,
        )

    async def _roll_back(self, conn: asyncpg.Connection, delivery: Delivery, rows: list[EventRow]) -> list[int]:
        if not delivery.rollback_block_hashes:
            return []
        hashes = sorted({_pg_safe(h) for h in delivery.rollback_block_hashes})
        # Rows this same delivery applies again stay canonical: the net effect is what counts.
        kept = [r for r in rows if r.block_hash in set(hashes)]
        records = await conn.fetch(
            _ROLLBACK_SQL, hashes, [r.block_hash for r in kept], [r.tx_hash for r in kept],
            [r.event_index for r in kept],
        )
        # Undo newest first, as a reorg unwinds the chain.
        records = sorted(records, key=lambda r: (r["block_height"], r["tx_index"], r["event_index"]), reverse=True)
        return [r["id"] for r in records]

    async def _record_changes(self, conn: asyncpg.Connection, changes: list[tuple[int, str]]) -> int | None:
        if not changes:
            return None
        # Last statement before commit: from here until commit this transaction holds the cursor row.
        base: int = await conn.fetchval(_TAKE_CURSORS_SQL, len(changes))
        await conn.execute(_RECORD_CHANGES_SQL, base, [c[0] for c in changes], [c[1] for c in changes])
        last = base + len(changes)
        # Delivered to listeners only when (and if) this transaction commits.
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))
        return last

    # --- reads for the tailer ------------------------------------------------------------------

    async def last_cursor(self) -> int:
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            value: int = await conn.fetchval("SELECT last_cursor FROM chainhook_cursor")
            return value

    async def changes_after(self, cursor: int, limit: int, *, upto: int | None = None,
                            match: Mapping[str, Collection[str]] | None = None) -> list[dict[str, Any]]:
        """The next ``limit`` changes after ``cursor`` (and at most ``upto``), in cursor order, with their
        event's columns; ``match`` keeps only changes whose event matches every named field."""
        conditions = ['c."cursor" > $1']
        arguments: list[Any] = [cursor, limit]
        if upto is not None:
            arguments.append(upto)
            conditions.append(f'c."cursor" <= ${len(arguments)}')
        for field, values in (match or {}).items():
            arguments.append(sorted(values))
            conditions.append(_MATCH_CONDITIONS[field].format(n=len(arguments)))
        query = _CHANGES_SQL.format(where=" AND ".join(conditions))
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            records = await conn.fetch(query, *arguments)
        return [dict(r) for r in records]

    async def chain_tip(self) -> dict[str, Any]:
        """Highest canonical block seen, and when the log last changed."""
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            block = await conn.fetchrow(
                "SELECT block_height, block_hash FROM chainhook_events WHERE canonical "
                "ORDER BY block_height DESC LIMIT 1")
            changed_at = await conn.fetchval(
                'SELECT committed_at FROM chainhook_changes ORDER BY "cursor" DESC LIMIT 1')
        return {
            "block_height": block["block_height"] if block else None,
            "block_hash": block["block_hash"] if block else None,
            "last_delivery_at": changed_at,
        }


async def listen(dsn: str, callback: Callable[[str], None], *, connect_timeout: float
                 ) -> asyncpg.Connection:
    """A dedicated connection LISTENing on the change channel; ``callback`` gets each payload."""
    async with _unavailable_as_domain_error():
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=connect_timeout)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        try:
            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        except BaseException:
            conn.terminate()  # cancelled or failed half-way: do not leave the connection behind
            raise
        return conn

