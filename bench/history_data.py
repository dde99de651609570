"""Fill a database with generated events for the history benchmarks (default 1,000,000 rows).

    .venv/bin/python bench/history_data.py [--rows N] [--data-dir DIR]

Uses DATABASE_URL if set, else an embedded PostgreSQL in --data-dir (default /tmp/timebank-bench),
which is kept so that the other benchmarks reuse it. Prints the DSN to use.

Shape: 200 contracts (a few hot ones), 50,000 addresses (Zipf-like), the real mix of event types,
~20 events per block, 1 in 50 rows rolled back, 1 in 20 transactions failed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from _harness import command_line, server_dsn

from timebank_realtime.chainhook.principals import encode_standard_principal
from timebank_realtime.settings import Settings
from timebank_realtime.store.migrate import migrate

CHUNK = 100_000
# Real c32check principals, so that the HTTP API accepts them as filters.
ADDRESSES = [encode_standard_principal(22, n.to_bytes(20, "big")) for n in range(50_000)]

# Generated in SQL so that a million rows take seconds, not minutes. $1 = first id of the chunk,
# $2 = rows in the chunk. Addresses (from a temporary address book) and contracts are functions of
# the row id.
GENERATE = """
INSERT INTO chainhook_events (id, tx_hash, block_height, block_hash, tx_index, event_index, contract_id, event_type,
                              event_data, affected_addresses, success, "timestamp", canonical, source_format,
                              last_cursor)
SELECT n,
       '0x' || lpad(to_hex(n / 3), 64, '0'),
       100000 + n / 20,
       '0x' || lpad(to_hex(100000 + n / 20), 64, 'b'),
       (n % 20) / 3,
       n % 20,
       'SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.contract-' || (CASE WHEN n % 4 = 0 THEN n % 5 ELSE n % 200 END),
       (ARRAY['print_event', 'print_event', 'print_event', 'ft_transfer_event', 'ft_transfer_event',
              'stx_transfer_event', 'contract_call', 'contract_call', 'nft_mint_event', 'nft_transfer_event',
              'ft_mint_event', 'stx_lock_event', 'data_var_set_event', 'ft_burn_event', 'data_map_insert_event',
              'nft_burn_event'])[1 + n % 16],
       jsonb_build_object('contract_identifier', 'SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.contract-' || (n % 200),
                          'topic', 'print', 'raw_value', '0x0100000000000000000000000000000001',
                          'amount', (n % 100000)::text,
                          'value', jsonb_build_object('event', 'event-' || (n % 30), 'amount', (n % 1000)::text)),
       ARRAY[first_party.address, second_party.address],
       n % 20 <> 7,
       timestamptz '2024-01-01' + (n / 20) * interval '5 seconds',
       n % 50 <> 0,
       'v1',
       n
FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS n
JOIN address_book AS first_party ON first_party.slot = (n * 7919) % 50000
JOIN address_book AS second_party ON second_party.slot = ((n / 3) * 104729) % 50000
"""


async def fill(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        existing = await conn.fetchval("SELECT count(*) FROM chainhook_events")
        if existing == rows and await conn.fetchval(
                "SELECT affected_addresses[1] = $1 FROM chainhook_events WHERE id = 1", ADDRESSES[7919 % 50000]):
            print(f"database already holds {existing} events")
            return
        await conn.execute("TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries "
                           "RESTART IDENTITY")
        await conn.execute("CREATE TEMPORARY TABLE address_book (slot INTEGER PRIMARY KEY, address TEXT NOT NULL)")
        await conn.copy_records_to_table("address_book", records=list(enumerate(ADDRESSES)))
        started = time.perf_counter()
        for first in range(1, rows + 1, CHUNK):
            await conn.execute(GENERATE, first, min(CHUNK, rows - first + 1))
            print(f"  {min(first + CHUNK - 1, rows):>9} rows  {time.perf_counter() - started:6.1f}s", flush=True)
        await conn.execute("SELECT setval('chainhook_events_id_seq', $1)", rows)
        await conn.execute("UPDATE chainhook_cursor SET last_cursor = $1", rows)
        await conn.execute("VACUUM ANALYZE chainhook_events")
        print(f"generated {rows} events in {time.perf_counter() - started:.1f}s")
    finally:
        await conn.close()


async def prepare(rows: int, data_dir: Path) -> str:
    dsn = server_dsn(data_dir)
    settings = Settings(_env_file=None, database_url=dsn)  # type: ignore[call-arg]
    await migrate(dsn, settings)
    await fill(dsn, rows)
    return dsn


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/timebank-bench"))
    args = parser.parse_args()
    dsn = asyncio.run(prepare(args.rows, args.data_dir))
    print(f"DATABASE_URL={dsn}")


if __name__ == "__main__":
    main()
