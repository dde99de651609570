-- The history API pages events by the cursor of their latest change (apply, rollback or restore),
-- the same cursor a socket subscription resumes from.
ALTER TABLE chainhook_events ADD COLUMN last_cursor BIGINT NOT NULL DEFAULT 0;

UPDATE chainhook_events AS e SET last_cursor = latest.cursor
FROM (SELECT event_id, max("cursor") AS cursor FROM chainhook_changes GROUP BY event_id) AS latest
WHERE latest.event_id = e.id;

-- Keyset pagination: each filter the API offers, then the cursor.
CREATE INDEX chainhook_events_cursor_idx ON chainhook_events (last_cursor);
DROP INDEX chainhook_events_contract_idx;
CREATE INDEX chainhook_events_contract_cursor_idx ON chainhook_events (contract_id, last_cursor);
DROP INDEX chainhook_events_type_idx;
CREATE INDEX chainhook_events_type_cursor_idx ON chainhook_events (event_type, last_cursor);
DROP INDEX chainhook_events_tx_idx;
CREATE INDEX chainhook_events_tx_cursor_idx ON chainhook_events (tx_hash, last_cursor);
DROP INDEX chainhook_events_height_idx;
CREATE INDEX chainhook_events_height_cursor_idx ON chainhook_events (block_height, last_cursor);

-- One row per Chainhook (by uuid): what /api/status reports about deliveries.
CREATE TABLE chainhook_deliveries (
    chainhook_uuid    TEXT        PRIMARY KEY,
    source_format     TEXT        NOT NULL CHECK (source_format IN ('v1', 'v2')),
    last_block_height BIGINT,
    last_delivery_at  TIMESTAMPTZ NOT NULL,
    deliveries        BIGINT      NOT NULL
);

-- "The print events of my contract", the most common dApp question, without walking either index.
CREATE INDEX chainhook_events_contract_type_cursor_idx ON chainhook_events (contract_id, event_type, last_cursor);
