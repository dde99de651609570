"""What an index of chainhook_events costs ingest: the time to COPY the same 100,000 rows into a copy of
the table with the indexes of migrations 1-6, then with each index of migration 7 added, then with the
indexes migration 7 leaves.

    .venv/bin/python bench/history_data.py       # once: the rows to copy (and migration 7 applied)
    .venv/bin/python bench/index_cost.py [--rows 100000] [--repeat 3]

Each variant is a fresh table (same columns, constraints and index definitions as chainhook_events); the
rows are held in memory and sent with one COPY; times include the commit. Variants take turns, round after
round; prints each one's median and range.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
from _harness import command_line, server_dsn

TARGET = "index_cost_target"
# The index migration 7 drops, as it was, and those it adds (sql/0007_history_plans.sql).
DROPPED = f"CREATE INDEX chainhook_events_height_cursor_idx_copy ON {TARGET} (block_height, last_cursor)"
NEW_INDEXES = ("chainhook_events_height_cursor_gist_idx", "chainhook_events_failed_type_cursor_idx",
               "chainhook_events_failed_contract_cursor_idx", "chainhook_events_failed_height_cursor_gist_idx",
               "chainhook_events_contract_height_idx")


async def index_definitions(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chainhook_events' "
                            "AND indexname NOT IN ('chainhook_events_pkey', 'chainhook_events_natural_key')")
    return {r["indexname"]: r["indexdef"].replace("public.chainhook_events", TARGET)
            .replace(f"INDEX {r['indexname']} ", f"INDEX {r['indexname']}_copy ") for r in rows}


async def copy_time(conn: asyncpg.Connection, columns: list[str], records: list[Any], indexes: list[str]) -> float:
    await conn.execute(f"DROP TABLE IF EXISTS {TARGET}")
    await conn.execute(f"CREATE TABLE {TARGET} (LIKE chainhook_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                       "INCLUDING GENERATED INCLUDING INDEXES EXCLUDING STATISTICS)")
    # INCLUDING INDEXES brings the primary key and the natural key; the others are added as the variant says.
    for name in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1 "
                                 "AND indexdef NOT LIKE 'CREATE UNIQUE%'", TARGET):
        await conn.execute(f'DROP INDEX "{name[0]}"')
    for definition in indexes:
        await conn.execute(definition)
    started = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table(TARGET, records=records, columns=columns)
    return (time.perf_counter() - started) * 1000


async def run(dsn: str, rows: int, repeat: int, added: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        definitions = await index_definitions(conn)
        kept = [d for name, d in definitions.items() if name not in (*added, "chainhook_events_height_cursor_idx")]
        base = [*kept, DROPPED]
        columns = [r["attname"] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'chainhook_events'::regclass AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum")]
        quoted = ", ".join(f'"{c}"' for c in columns)
        records = await conn.fetch(f"SELECT {quoted} "
                                   "FROM chainhook_events ORDER BY id LIMIT $1", rows)
        variants = {"migrations 1-6": base,
                    **{f"+ {name}": [*base, definitions[name]] for name in added},
                    "migration 7 (all of them, the btree dropped)": [*kept, *(definitions[name] for name in added)]}
        print(f"COPY {len(records)} rows; {len(base)} indexes besides the keys in migrations 1-6")
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):  # round after round, so that a slow spell of the machine hits every variant
            for name, indexes in variants.items():
                times[name].append(await copy_time(conn, columns, list(records), indexes))
        for name, each in times.items():
            print(f"{name:<50} median {statistics.median(each):7.0f} ms  (range {min(each):.0f}-{max(each):.0f} ms)")
        await conn.execute(f"DROP TABLE IF EXISTS {TARGET}")
    finally:
        await conn.close()


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--index", action="append", help="an index of chainhook_events to price (default: "
                        "those of migration 7)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench"))
    args = parser.parse_args()
    asyncio.run(run(server_dsn(args.data_dir), args.rows, args.repeat, tuple(args.index or NEW_INDEXES)))


if __name__ == "__main__":
    main()
