"""Forward-only migrations: applied once under a lock, recorded with checksums, edits refused."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from timebank_realtime.errors import MigrationError
from timebank_realtime.store.migrate import apply_migrations, load_migrations, migrations_dir


@pytest.fixture
async def scratch_db(database_url: str) -> asyncpg.Connection:
    """An empty schema on the test server, so migrations can run from nothing."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("DROP SCHEMA IF EXISTS migration_test CASCADE; CREATE SCHEMA migration_test;"
                       "SET search_path TO migration_test")
    yield conn
    await conn.execute("DROP SCHEMA migration_test CASCADE")
    await conn.close()


def test_shipped_migrations_are_numbered_and_checksummed() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(len(m.checksum) == 64 for m in migrations)
    assert migrations_dir().name == "sql"


async def test_apply_records_each_migration_once(scratch_db: asyncpg.Connection) -> None:
    migrations = load_migrations()
    assert await apply_migrations(scratch_db, migrations) == [m.version for m in migrations]
    assert await apply_migrations(scratch_db, migrations) == []
    recorded = await scratch_db.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == \
        [(m.version, m.name, m.checksum) for m in migrations]
    assert await scratch_db.fetchval("SELECT last_cursor FROM chainhook_cursor") == 0


async def test_a_changed_applied_migration_is_refused(scratch_db: asyncpg.Connection, tmp_path: Path) -> None:
    await apply_migrations(scratch_db, load_migrations())
    edited = tmp_path / "sql"
    shutil.copytree(migrations_dir(), edited)
    first = sorted(edited.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await apply_migrations(scratch_db, load_migrations(edited))


async def test_a_database_from_a_newer_version_is_refused(scratch_db: asyncpg.Connection) -> None:
    await apply_migrations(scratch_db, load_migrations())
    await scratch_db.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')")
    with pytest.raises(MigrationError, match="does not ship"):
        await apply_migrations(scratch_db, load_migrations())


async def test_concurrent_migrators_apply_once(database_url: str, scratch_db: asyncpg.Connection) -> None:
    async def migrator() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("SET search_path TO migration_test")
            return await apply_migrations(conn, load_migrations())
        finally:
            await conn.close()

    results = await asyncio.gather(*(migrator() for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]


def test_badly_named_or_gapped_migrations_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "0003_third.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "2-bad.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN_lower_snake"):
        load_migrations(tmp_path)
