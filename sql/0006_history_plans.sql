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
-- Partial: only failed rows pay for them (1 in 20 in the benchmark's data), 2-4 MB per million rows.
CREATE INDEX chainhook_events_failed_type_cursor_idx ON chainhook_events (event_type, last_cursor) WHERE NOT success;
CREATE INDEX chainhook_events_failed_contract_cursor_idx ON chainhook_events (contract_id, last_cursor)
    WHERE NOT success;
-- Some event types never fail, or fail far more often than others; without the pair's own frequencies the
-- planner multiplies the two and misjudges which index is cheaper.
CREATE STATISTICS chainhook_events_type_success_stats (mcv) ON event_type, success FROM chainhook_events;
