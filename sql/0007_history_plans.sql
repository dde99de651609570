-- History plans that do not bet on evenly spread matches (bench/explain_check.py, 1M rows).
--
-- A height range has no cursor-ordered B-tree: (block_height, last_cursor) is in cursor order only
-- within one height. Left to the cursor index, PostgreSQL walks it in order and filters, expecting the
-- range's rows to be spread over the whole log, when they sit together (cursors follow heights): a
-- 10,000-block range took 160-300 ms. A GiST index on both columns finds the range and returns its rows
-- nearest a cursor first (ORDER BY last_cursor <-> origin, store/reads.py): a few ms, with or without
-- other filters. btree_gist is a trusted contrib extension (a database owner may create it).
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE INDEX chainhook_events_height_cursor_gist_idx ON chainhook_events USING gist (block_height, last_cursor);

-- Failed transactions of one event type, or of one contract: no index could find the pair, so "ft_mint_event
-- AND NOT success" walked a whole index and matched nothing (626 ms); a contract's failures took 25-60 ms.
-- Partial: only failed rows pay for them (1 in 20 in the benchmark's data), 2-4 MB each per million rows.
CREATE INDEX chainhook_events_failed_type_cursor_idx ON chainhook_events (event_type, last_cursor) WHERE NOT success;
CREATE INDEX chainhook_events_failed_contract_cursor_idx ON chainhook_events (contract_id, last_cursor)
    WHERE NOT success;
-- And in a height range: else PostgreSQL ANDs a bitmap of the whole range (from the (network, block_height)
-- index) with the failures' (15-70 ms); this one holds only the failures and returns them in cursor order.
CREATE INDEX chainhook_events_failed_height_cursor_gist_idx ON chainhook_events USING gist (block_height, last_cursor)
    WHERE NOT success;

-- A contract's events in a wide height range: the contract's rows are spread over the log, the range is
-- one stretch of it, and neither index alone finds the pair (1,000 rows of the contract's 5,000 in the
-- benchmark: 22-65 ms through the two bitmaps, 2-6 ms through this one).
CREATE INDEX chainhook_events_contract_height_idx ON chainhook_events (contract_id, block_height);

-- Superseded by the GiST index above (one height in cursor order, or a range), and used by no history
-- plan since: one index fewer for every insert to update.
DROP INDEX chainhook_events_height_cursor_idx;
