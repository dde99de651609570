-- The event history: one row per Stacks event (and per contract-call / deployment transaction).
CREATE TABLE chainhook_events (
    id                 BIGSERIAL PRIMARY KEY,
    tx_hash            TEXT        NOT NULL,
    block_height       BIGINT      NOT NULL CHECK (block_height >= 0),
    block_hash         TEXT        NOT NULL,
    tx_index           INTEGER     NOT NULL CHECK (tx_index >= 0),
    -- Block-wide event position; -1 for the transaction's own row (contract_call / contract_deployment).
    event_index        INTEGER     NOT NULL CHECK (event_index >= -1),
    contract_id        TEXT        NOT NULL DEFAULT '',
    event_type         TEXT        NOT NULL CHECK (event_type IN (
        'print_event', 'stx_transfer_event', 'stx_mint_event', 'stx_burn_event', 'stx_lock_event',
        'ft_transfer_event', 'ft_mint_event', 'ft_burn_event',
        'nft_transfer_event', 'nft_mint_event', 'nft_burn_event',
        'data_var_set_event', 'data_map_insert_event', 'data_map_update_event', 'data_map_delete_event',
        'contract_call', 'contract_deployment')),
    event_data         JSONB       NOT NULL,
    affected_addresses TEXT[]      NOT NULL DEFAULT '{}',
    success            BOOLEAN     NOT NULL,
    "timestamp"        TIMESTAMPTZ NOT NULL,
    canonical          BOOLEAN     NOT NULL DEFAULT TRUE,
    source_format      TEXT        NOT NULL CHECK (source_format IN ('v1', 'v2')),
    received_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A transaction has many events, and after a reorg the same transaction can appear in another block.
    CONSTRAINT chainhook_events_natural_key UNIQUE (block_hash, tx_hash, event_index)
);

CREATE INDEX chainhook_events_contract_idx ON chainhook_events (contract_id, block_height);
CREATE INDEX chainhook_events_type_idx ON chainhook_events (event_type, block_height);
CREATE INDEX chainhook_events_height_idx ON chainhook_events (block_height);
CREATE INDEX chainhook_events_tx_idx ON chainhook_events (tx_hash);
-- fastupdate = off: the pending-list flush otherwise lands on one unlucky insert (p99 x7 measured).
CREATE INDEX chainhook_events_addresses_idx ON chainhook_events
    USING GIN (affected_addresses) WITH (fastupdate = off);

-- The log: every change to chainhook_events (apply, rollback, restore) in commit order.
-- "cursor" values are gapless and strictly increasing; see store.py for how commit order is kept.
CREATE TABLE chainhook_changes (
    "cursor"     BIGINT      PRIMARY KEY CHECK ("cursor" > 0),
    event_id     BIGINT      NOT NULL REFERENCES chainhook_events (id),
    change       TEXT        NOT NULL CHECK (change IN ('apply', 'rollback', 'restore')),
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chainhook_changes_event_idx ON chainhook_changes (event_id);

-- One row holding the last cursor handed out. Deliveries lock it until commit, which is what keeps
-- cursor order equal to commit order.
CREATE TABLE chainhook_cursor (
    singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_cursor BIGINT  NOT NULL CHECK (last_cursor >= 0)
);
INSERT INTO chainhook_cursor (singleton, last_cursor) VALUES (TRUE, 0);
