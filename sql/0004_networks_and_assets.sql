-- Which chain an event is from, which Chainhook delivered it, and the FT/NFT asset it moves.

-- Rows stored before this migration: the network from the version character of the first principal
-- they name (P/M mainnet, T/N testnet; Stacks regtest and devnet use testnet addresses), as the
-- parser derives it for Chainhook v1 payloads. Their Chainhook was not recorded: ''.
ALTER TABLE chainhook_events ADD COLUMN network TEXT;
ALTER TABLE chainhook_events ADD COLUMN chainhook_uuid TEXT NOT NULL DEFAULT '';
UPDATE chainhook_events SET network = CASE substr(coalesce(nullif(contract_id, ''), affected_addresses[1], ''), 2, 1)
    WHEN 'P' THEN 'mainnet' WHEN 'M' THEN 'mainnet'
    WHEN 'T' THEN 'testnet' WHEN 'N' THEN 'testnet'
    ELSE 'unknown' END;
ALTER TABLE chainhook_events ALTER COLUMN network SET NOT NULL, ALTER COLUMN network SET DEFAULT 'unknown';

-- The asset an FT/NFT event moves, `SP….token::name` (for an NFT, its class), NULL for other events.
-- Generated, so every row has it, whichever path wrote it.
ALTER TABLE chainhook_events ADD COLUMN asset_identifier TEXT GENERATED ALWAYS AS (
    CASE WHEN event_type LIKE 'ft\_%' OR event_type LIKE 'nft\_%'
         THEN coalesce(event_data->>'asset_class_identifier', event_data->>'asset_identifier') END) STORED;

-- History filters, like the others: the field, then the cursor.
CREATE INDEX chainhook_events_network_cursor_idx ON chainhook_events (network, last_cursor);
CREATE INDEX chainhook_events_asset_cursor_idx ON chainhook_events (asset_identifier, last_cursor)
    WHERE asset_identifier IS NOT NULL;
-- The tip of each network: its highest canonical block.
CREATE INDEX chainhook_events_network_height_idx ON chainhook_events (network, block_height) WHERE canonical;

-- The network each Chainhook delivers for (its latest delivery's), for the per-network status. Rows
-- stored before this migration do not say which Chainhook delivered them: 'unknown' until the next.
ALTER TABLE chainhook_deliveries ADD COLUMN network TEXT NOT NULL DEFAULT 'unknown';

-- The analyst views gain the columns (appended: CREATE OR REPLACE VIEW keeps the existing ones first).
CREATE OR REPLACE VIEW canonical_events AS
SELECT * FROM chainhook_events WHERE canonical;

CREATE OR REPLACE VIEW contract_daily_counts AS
SELECT contract_id, ("timestamp" AT TIME ZONE 'UTC')::date AS day, event_type, count(*) AS events, network
FROM chainhook_events
WHERE canonical
GROUP BY 1, 2, 3, 5;

CREATE OR REPLACE VIEW transfers AS
SELECT id, block_height, "timestamp", tx_hash, event_type,
       CASE event_type WHEN 'stx_transfer_event' THEN 'STX' ELSE event_data->>'asset_identifier' END AS asset,
       event_data->>'sender' AS sender,
       event_data->>'recipient' AS recipient,
       CASE WHEN event_data->>'amount' ~ '^[0-9]+$' THEN (event_data->>'amount')::numeric END AS amount,
       contract_id, network, asset_identifier
FROM chainhook_events
WHERE canonical AND event_type IN ('stx_transfer_event', 'ft_transfer_event', 'nft_transfer_event');

CREATE OR REPLACE VIEW print_events AS
SELECT id, block_height, "timestamp", tx_hash, contract_id, event_data->>'topic' AS topic,
       COALESCE(event_data->'value'->>'event', event_data->'value'->>'action') AS event_name,
       event_data->'value' AS value, network
FROM chainhook_events
WHERE canonical AND event_type = 'print_event';
