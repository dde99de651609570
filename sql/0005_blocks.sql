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
    last_cursor    BIGINT      NOT NULL,
    chainhook_uuid TEXT        NOT NULL DEFAULT '',
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chainhook_blocks_network_height_idx ON chainhook_blocks (network, block_height);

-- A change is of an event or of a block.
ALTER TABLE chainhook_changes ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE chainhook_changes ADD COLUMN block_id BIGINT REFERENCES chainhook_blocks (id);
ALTER TABLE chainhook_changes ADD CONSTRAINT chainhook_changes_one_subject CHECK (num_nonnulls(event_id, block_id) = 1);
CREATE INDEX chainhook_changes_block_idx ON chainhook_changes (block_id) WHERE block_id IS NOT NULL;
