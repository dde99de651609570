"""PostgreSQL: the only module that holds SQL. Pool, migrations, delivery writes and log reads.

How cursor order equals commit order: a delivery's first statement locks the single
``chainhook_cursor`` row, and the lock is held until commit, so deliveries take cursors one after
the other and commit in that order (one that rolls back leaves the numbers to the next). A tailer
reading ``cursor > last`` therefore always sees a gapless prefix of the log and can never skip a
change that commits later with a smaller cursor. Knowing its cursors up front, a delivery writes
each row once, with ``last_cursor`` already set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from . import jsoncodec
from .chainhook.streaming import StreamSummary
from .errors import DatabaseUnavailable, MigrationError
from .events import EVENT_COLUMNS, Delivery, EventRow
from .migrations import Migration
from .queries import EventQuery

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chainhook_changes"
# Arbitrary, fixed: every process migrating this database takes the same lock.
MIGRATION_LOCK_KEY = 0x7B_A7C0_0001

# Every way asyncpg reports that the server went away, could not be reached, or ended the session
# mid-operation. A delivery that meets one of them was rolled back (or never began): it is answered
# 503 ``database_unavailable`` and Chainhook retries it. The one list; nothing else catches these.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable: the socket itself
    TimeoutError,  # connect or pool acquire timed out; also a COPY abandoned on a lost connection
    asyncpg.PostgresConnectionError,  # class 08, and ConnectionDoesNotExistError ("closed in the middle")
    asyncpg.InterfaceError,  # "connection is closed", "another operation is cancelling", ...
    # The protocol state machine after the socket died under it ("cannot switch to state 15", "not
    # connected"); OutdatedSchemaCacheError, a subclass, also clears on a retry.
    asyncpg.InternalClientError,
    # Class 57: pg_terminate_backend and shutdown (57P01 AdminShutdown), a crashed sibling (57P02),
    # "the database system is starting up" (57P03), a dropped database, statement_timeout (57014).
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full, out of memory
    asyncpg.PostgresSystemError,  # class 58: I/O errors on the server
    # Class 25P0x: the server ended an idle transaction or one that ran too long.
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.TransactionTimeoutError,
    # Class 40 (a deadlock, a serialization failure) still there after the delivery's own retries:
    # transient, nothing was stored, and a later retry goes through.
    asyncpg.TransactionRollbackError,
)


@asynccontextmanager
async def _unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error


async def _copy_rows(conn: asyncpg.Connection, records: Iterable[tuple[Any, ...]]) -> None:
    """COPY ``records`` into chainhook_events, abandoned as soon as the connection is lost.

    asyncpg's COPY waits for the socket to accept more data; a connection lost while it waits never
    does, and the COPY (with the delivery) would hang for ever. The termination listener ends the wait
    as a TimeoutError, which is one of the _UNAVAILABLE errors."""
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


class RawJson(str):
    """JSON text already serialized (and made safe for PostgreSQL): passed to jsonb as it is."""


_JSONB_VERSION = b"\x01"  # jsonb's binary wire format: a version byte, then the JSON text


def _encode_jsonb(value: Any) -> bytes:
    if isinstance(value, RawJson):
        return _JSONB_VERSION + value.encode()
    return _JSONB_VERSION + jsoncodec.dumps_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    return jsoncodec.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary, so that COPY (binary only) can write jsonb columns too.
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog",
                              format="binary")


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
                              last_cursor, source_format)
SELECT u.tx_hash, u.block_height, u.block_hash, u.tx_index, u.event_index, u.contract_id, u.event_type,
       u.event_data::jsonb, ARRAY(SELECT jsonb_array_elements_text(u.addresses::jsonb)), u.success,
       u.ts, u.last_cursor, $13
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bool[], $11::timestamptz[], $12::bigint[])
     AS u(tx_hash, block_height, block_hash, tx_index, event_index, contract_id, event_type,
          event_data, addresses, success, ts, last_cursor)
RETURNING id, last_cursor
"""

_COPY_COLUMNS = (*EVENT_COLUMNS, "last_cursor", "source_format")

# After the rows of an append were COPYed with cursors head+1..last: log them, move the cursor, record
# the delivery and notify, in one statement (the rows are the only ones with a cursor in that range).
_APPEND_TAIL_SQL = """
WITH logged AS (
    INSERT INTO chainhook_changes ("cursor", event_id, change)
    SELECT last_cursor, id, 'apply' FROM chainhook_events WHERE last_cursor > $1 AND last_cursor <= $2
), moved AS (
    UPDATE chainhook_cursor SET last_cursor = $2
), recorded AS ({record_delivery})
SELECT pg_notify($6, $2::text)
"""  # {record_delivery}: the delivery upsert below, with the statement's own parameter numbers

_RESTORE_SQL = """
UPDATE chainhook_events AS e SET canonical = TRUE, last_cursor = u.last_cursor
FROM unnest($1::bigint[], $2::bigint[]) AS u(id, last_cursor) WHERE e.id = u.id
"""

_DELIVERY_UPSERT = """
INSERT INTO chainhook_deliveries AS d (chainhook_uuid, source_format, last_block_height, last_delivery_at, deliveries)
VALUES (${uuid}, ${fmt}, ${height}, now(), 1)
ON CONFLICT (chainhook_uuid) DO UPDATE
SET source_format = EXCLUDED.source_format,
    last_block_height = GREATEST(d.last_block_height, EXCLUDED.last_block_height),
    last_delivery_at = EXCLUDED.last_delivery_at,
    deliveries = d.deliveries + 1
"""
_RECORD_DELIVERY_SQL = _DELIVERY_UPSERT.format(uuid=1, fmt=2, height=3)
_APPEND_TAIL_SQL = _APPEND_TAIL_SQL.format(record_delivery=_DELIVERY_UPSERT.format(uuid=3, fmt=4, height=5))

_RECORD_CHANGES_SQL = """
INSERT INTO chainhook_changes ("cursor", event_id, change)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
"""

_CHANGES_SQL = """
INSERT INTO chainhook_changes ("cursor", event_id, change)
SELECT $1 + u.ordinality, u.event_id, u.change
FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS u(event_id, change, ordinality)
"""


def _event_column_list(table: str = "") -> str:
    return ", ".join(f'{table}"{name}"' for name in EVENT_COLUMNS)


_CHANGES_SQL = f"""
SELECT c."cursor", c.change, c.committed_at, e.id, {_event_column_list("e.")}
FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id
WHERE {{where}} ORDER BY c."cursor" LIMIT $2
"""

# The filter fields (events.FILTER_FIELDS), as SQL over the joined event (values are always bound parameters).
_MATCH_CONDITIONS = {
    "tx_hash": "e.tx_hash = ANY(${n}::text[])",
    "contract": "e.contract_id = ANY(${n}::text[])",
    "address": "e.affected_addresses && ${n}::text[]",
    "event_type": "e.event_type = ANY(${n}::text[])",
}


_EVENT_COLUMNS = f'id, last_cursor AS "cursor", {_event_column_list()}, canonical'


def _event_conditions(query: EventQuery) -> tuple[list[str], list[Any]]:
    """WHERE clauses for a history query; every value is a bound parameter."""
    single_type = query.event_types[0] if len(query.event_types) == 1 else None
    several_types = list(query.event_types) if len(query.event_types) > 1 else None
    wanted: list[tuple[str, Any]] = [
        ("contract_id = {n}", query.contract),
        ("affected_addresses @> ARRAY[{n}::text]", query.address),
        # Equality lets the (event_type, last_cursor) index deliver rows already in cursor order.
        ("event_type = {n}", single_type),
        ("event_type = ANY({n}::text[])", several_types),
        ("tx_hash = {n}", query.tx_hash),
        ("block_height >= {n}", query.from_height),
        ("block_height <= {n}", query.to_height),
        ("success = {n}", query.success),
        ("last_cursor > {n}", query.after),
        ("last_cursor < {n}", query.before),
    ]
    conditions = [] if query.include_rolled_back else ["canonical"]
    arguments: list[Any] = []
    for template, value in wanted:
        if value is not None:
            arguments.append(value)
            conditions.append(template.format(n=f"${len(arguments)}"))
    return conditions, arguments



def events_page_sql(query: EventQuery) -> tuple[str, ...]:
    """The history query and its arguments (public so that the benchmark can EXPLAIN exactly it)."""
    conditions, arguments = _event_conditions(query)
    direction = "DESC" if query.order == "desc" else "ASC"
    arguments.append(query.limit + 1)
    sql = (f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE {' AND '.join(conditions) or 'TRUE'} "
           f"ORDER BY last_cursor {direction} LIMIT ${len(arguments)}")
    return (sql, *arguments)


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
    try:
        # orjson only writes valid UTF-8, so NUL is the one thing PostgreSQL could still refuse.
        text = orjson.dumps(value).decode()
        if "\\u0000" not in text:
            return text
    except TypeError:  # integers beyond 64 bits, lone surrogates, ...: the careful path
        pass
    return json.dumps(_pg_safe_value(value), ensure_ascii=False, separators=(",", ":"))


def _unique_rows(rows: Sequence[EventRow]) -> tuple[list[EventRow], int]:
    """First occurrence of each natural key; also how many repeats the payload itself held."""
    seen: dict[tuple[str, str, int], EventRow] = {}
    for row in rows:
        seen.setdefault(row.natural_key, row)
    return list(seen.values()), len(rows) - len(seen)


def _insert_arguments(rows: Sequence[EventRow], cursors: Sequence[int], source_format: str) -> list[Any]:
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
        list(cursors),
        source_format,
    ]


def _copy_records(rows: Iterable[EventRow], head: int, source_format: Callable[[], str]) -> Iterator[tuple[Any, ...]]:
    """Rows for COPY, in payload (chain) order, taking cursors head+1, head+2, ... (made as COPY
    consumes them, so a large delivery is not serialized twice in memory). ``source_format`` is
    asked per row: a streamed delivery knows its format once its first row exists."""
    return ((_pg_safe(r.tx_hash), r.block_height, _pg_safe(r.block_hash), r.tx_index, r.event_index,
             _pg_safe(r.contract_id), r.event_type, RawJson(_jsonb_text(r.event_data)),
             [_pg_safe(a) for a in r.affected_addresses], r.success, r.timestamp, head + n, source_format())
            for n, r in enumerate(rows, start=1))


def _key_columns(rows: Sequence[EventRow]) -> list[list[Any]]:
    return [[_pg_safe(r.block_hash) for r in rows], [_pg_safe(r.tx_hash) for r in rows],
            [r.event_index for r in rows]]


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
        if rows and not delivery.rollback_block_hashes:
            appended = await self._try_append(conn, delivery, rows, repeats)
            if appended is not None:
                return appended
        async with conn.transaction():
            # First statement: from here to commit no other delivery can take cursors.
            head: int = await conn.fetchval(_LOCK_CURSOR_SQL)
            rolled_back = await self._roll_back(conn, delivery, rows, head)
            cursor = head + len(rolled_back)
            existing = {(r["block_hash"], r["tx_hash"], r["event_index"]): r
                        for r in await conn.fetch(_EXISTING_SQL, *_key_columns(rows))} if rows else {}
            new_rows = [r for r in rows if r.natural_key not in existing]
            # Cursors in payload (chain) order, whether a row is new or comes back after a rollback.
            changed = [r for r in rows if r.natural_key not in existing or not existing[r.natural_key]["canonical"]]
            cursor_of = {row.natural_key: cursor + n for n, row in enumerate(changed, start=1)}
            inserted = await self._insert(conn, new_rows, cursor_of, delivery.format)
            restored = [(existing[r.natural_key]["id"], cursor_of[r.natural_key])
                        for r in changed if r.natural_key in existing]
            if restored:
                await conn.execute(_RESTORE_SQL, [r[0] for r in restored], [r[1] for r in restored])
            changes = rolled_back + sorted(inserted + [(i, c, "restore") for i, c in restored], key=lambda c: c[1])
            last_cursor = await self._record_changes(conn, changes)
            await conn.execute(_RECORD_DELIVERY_SQL, _pg_safe(delivery.chainhook_uuid), delivery.format,
                               delivery.tip_height)
        return DeliveryResult(
            applied=len(inserted),
            duplicates=repeats + len(rows) - len(changed),
            rolled_back=len(rolled_back),
            restored=len(restored),
            last_cursor=last_cursor,
        )

    async def _try_append(self, conn: asyncpg.Connection, delivery: Delivery, rows: list[EventRow],
                          repeats: int) -> DeliveryResult | None:
        """The common case, fast: every row is new. COPY them with their cursors, then log them in one
        statement. None (and nothing written) if some row was stored before: a repeated delivery or a
        restore, which the general path sorts out."""
        try:
            async with conn.transaction():
                head: int = await conn.fetchval(_LOCK_CURSOR_SQL)
                await _copy_rows(conn, _copy_records(rows, head, lambda: delivery.format))
                last = head + len(rows)
                await conn.execute(_APPEND_TAIL_SQL, head, last, _pg_safe(delivery.chainhook_uuid), delivery.format,
                                   delivery.tip_height, NOTIFY_CHANNEL)
        except asyncpg.UniqueViolationError:
            return None
        return DeliveryResult(applied=len(rows), duplicates=repeats, rolled_back=0, restored=0, last_cursor=last)

    async def append_stream(self, rows: Iterator[EventRow], summary: StreamSummary) -> DeliveryResult | None:
        """Store a streamed delivery whose rows are all new, in one transaction, writing rows while
        they are still being parsed. None, with nothing written, if some row was stored before.
        Whatever ``rows`` raises (an invalid transaction, a shape that cannot stream) rolls the
        transaction back and reaches the caller."""
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            try:
                async with conn.transaction():
                    head: int = await conn.fetchval(_LOCK_CURSOR_SQL)
                    await _copy_rows(conn, _copy_records(rows, head, lambda: summary.format or ""))
                    last = head + summary.rows
                    uuid, fmt = _pg_safe(summary.chainhook_uuid), summary.format
                    if summary.rows:
                        await conn.execute(_APPEND_TAIL_SQL, head, last, uuid, fmt, summary.tip_height,
                                           NOTIFY_CHANNEL)
                    else:
                        await conn.execute(_RECORD_DELIVERY_SQL, uuid, fmt, summary.tip_height)
            except asyncpg.UniqueViolationError:
                return None
        return DeliveryResult(applied=summary.rows, duplicates=summary.repeats, rolled_back=0, restored=0,
                              last_cursor=last if summary.rows else None)

    async def _roll_back(self, conn: asyncpg.Connection, delivery: Delivery, rows: list[EventRow],
                         head: int) -> list[tuple[int, int, str]]:
        if not delivery.rollback_block_hashes:
            return []
        hashes = sorted({_pg_safe(h) for h in delivery.rollback_block_hashes})
        # Rows this same delivery applies again stay canonical: the net effect is what counts.
        kept = [r for r in rows if r.block_hash in set(hashes)]
        records = await conn.fetch(_ROLLBACK_SQL, hashes, *_key_columns(kept), head)
        return sorted(((r["id"], r["last_cursor"], "rollback") for r in records), key=lambda c: c[1])

    async def _insert(self, conn: asyncpg.Connection, rows: list[EventRow], cursor_of: dict[Any, int],
                      source_format: str) -> list[tuple[int, int, str]]:
        if not rows:
            return []
        records = await conn.fetch(_INSERT_SQL, *_insert_arguments(rows, [cursor_of[r.natural_key] for r in rows],
                                                                    source_format))
        return [(r["id"], r["last_cursor"], "apply") for r in records]

    async def _record_changes(self, conn: asyncpg.Connection, changes: list[tuple[int, int, str]]) -> int | None:
        if not changes:
            return None
        await conn.execute(_RECORD_CHANGES_SQL, [c[1] for c in changes], [c[0] for c in changes],
                           [c[2] for c in changes])
        last = changes[-1][1]
        await conn.execute("UPDATE chainhook_cursor SET last_cursor = $1", last)
        # Delivered to listeners only when (and if) this transaction commits.
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))
        return last

    # --- reads for the tailer ------------------------------------------------------------------

    async def last_cursor(self) -> int:
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            value: int = await conn.fetchval("SELECT last_cursor FROM chainhook_cursor")
            return value

    async def changes_after(self, cursor: int, limit: int, *, upto: int | None = None,
                            match: Sequence[Mapping[str, Collection[str]]] = ()) -> list[dict[str, Any]]:
        """The next ``limit`` changes after ``cursor`` (and at most ``upto``), in cursor order, with their
        event's columns. ``match`` keeps only changes whose event matches any of the given filters (a
        filter matches when every field it names does; an empty one matches everything)."""
        conditions = ['c."cursor" > $1']
        arguments: list[Any] = [cursor, limit]
        if upto is not None:
            arguments.append(upto)
            conditions.append(f'c."cursor" <= ${len(arguments)}')
        if match and all(match):
            alternatives = []
            for one in match:
                fields = []
                for field, values in one.items():
                    arguments.append(sorted(values))
                    fields.append(_MATCH_CONDITIONS[field].format(n=len(arguments)))
                alternatives.append("(" + " AND ".join(fields) + ")")
            conditions.append("(" + " OR ".join(alternatives) + ")")
        query = _CHANGES_SQL.format(where=" AND ".join(conditions))
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            records = await conn.fetch(query, *arguments)
        return [dict(r) for r in records]

    # --- reads for the history API ------------------------------------------------------------------

    async def _fetch(self, query: str, *arguments: Any) -> list[dict[str, Any]]:
        async with _unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            return [dict(r) for r in await conn.fetch(query, *arguments)]

    async def events_page(self, query: EventQuery) -> list[dict[str, Any]]:
        """Up to ``query.limit + 1`` events in cursor order (the extra row says whether more exist)."""
        return await self._fetch(*events_page_sql(query))

    async def event_by_id(self, event_id: int) -> dict[str, Any] | None:
        rows = await self._fetch(f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE id = $1", event_id)
        return rows[0] if rows else None

    async def transaction_events(self, tx_hash: str) -> list[dict[str, Any]]:
        return await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM chainhook_events WHERE tx_hash = $1 "
            "ORDER BY canonical DESC, block_height, event_index", tx_hash)

    async def status(self) -> dict[str, Any]:
        rows = await self._fetch(
            "SELECT (SELECT count(*) FROM chainhook_events) AS events, "
            "(SELECT count(*) FROM chainhook_events WHERE NOT canonical) AS rolled_back, "
            "(SELECT last_cursor FROM chainhook_cursor) AS cursor")
        deliveries = await self._fetch(
            "SELECT chainhook_uuid, source_format, last_block_height, last_delivery_at, deliveries "
            "FROM chainhook_deliveries ORDER BY last_delivery_at DESC")
        return {**rows[0], "chainhooks": deliveries}

    async def schema_version(self) -> int:
        """The newest applied migration; raises DatabaseUnavailable when the server cannot be asked."""
        rows = await self._fetch("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")
        return int(rows[0]["version"])

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

