"""The numbered, forward-only SQL migrations this version ships, with their checksums, and applying
those a database lacks (``migrate``: at start-up, and by ``timebank-realtime migrate``)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from ..errors import MigrationError
from ..settings import DatabaseSettings
from .db import create_pool

logger = logging.getLogger(__name__)

# Arbitrary, fixed: every process migrating this database takes the same lock.
MIGRATION_LOCK_KEY = 0x7B_A7C0_0001

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def migrations_dir() -> Path:
    """``sql/`` inside an installed wheel, or beside the package in a source checkout."""
    packaged = Path(str(resources.files("timebank_realtime"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        raw = path.read_bytes()
        found.append(Migration(int(match[1]), match[2], raw.decode("utf-8"),
                               hashlib.sha256(raw).hexdigest()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations in {directory} must be numbered 1..n without gaps, found {versions}")
    return found


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


async def migrate(dsn: str, settings: DatabaseSettings) -> list[int]:
    """Apply what the database at ``dsn`` lacks, on a connection of its own; the versions applied."""
    pool = await create_pool(dsn, min_size=1, max_size=1, connect_timeout=settings.db_connect_timeout_seconds,
                             retry_seconds=settings.db_startup_retry_seconds)
    try:
        async with pool.acquire() as conn:
            return await apply_migrations(conn, load_migrations())
    finally:
        await pool.close()
