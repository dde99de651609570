-- Blocks as a topic of their own: each block a delivery applies, with its counts, and its changes
-- (apply, rollback, restore) in the same log and cursor sequence as the events'.
CREATE TABLE chainhook_blocks (
    id             BIGSERIAL   PRIMARY KEY,
    network        TEXT        NOT NULL,
    block_height   BIGINT      NOT NULL CHECK (block_height >= 0),
    block_hash     TEXT        NOT NULL UNIQUE,
    "timestamp"    TIMESTAMPTZ NOT NULL,
    -- As the delivery that first applied the block carried it: the transactions Chainhook sent (those
    -- its predicate matched) and the events stored for them.
    transactions   INTEGER     NOT NULL CHECK (transactions >= 0),
    events         INTEGER     NOT NULL CHECK (events >= 0),
    canonical      BOOLEAN     NOT NULL DEFAULT TRUE,
    last_cursor    BIGINT      NOT NULL,  -- 0 for a block stored before this migration, never pushed
    chainhook_uuid TEXT        NOT NULL DEFAULT '',
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chainhook_blocks_network_height_idx ON chainhook_blocks (network, block_height);

-- The blocks of the rows stored before: known, so that a later reorg rolls them back and a repeated
-- delivery does not apply them again, but with no change of their own (last_cursor 0: they were
-- never pushed). Their counts are of the rows stored.
INSERT INTO chainhook_blocks (network, block_height, block_hash, "timestamp", transactions, events, canonical,
                              last_cursor, chainhook_uuid)
SELECT (array_agg(network ORDER BY id))[1], min(block_height), block_hash, min("timestamp"),
       count(DISTINCT tx_hash), count(*) FILTER (WHERE event_index >= 0), bool_or(canonical), 0,
       (array_agg(chainhook_uuid ORDER BY id))[1]
FROM chainhook_events GROUP BY block_hash;

-- A change is of an event or of a block.
ALTER TABLE chainhook_changes ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE chainhook_changes ADD COLUMN block_id BIGINT REFERENCES chainhook_blocks (id);
ALTER TABLE chainhook_changes ADD CONSTRAINT chainhook_changes_one_subject CHECK (num_nonnulls(event_id, block_id) = 1);
-- A blocks replay reads the block changes only, in cursor order.
CREATE INDEX chainhook_changes_block_cursor_idx ON chainhook_changes ("cursor") WHERE block_id IS NOT NULL;
