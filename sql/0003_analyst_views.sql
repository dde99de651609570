-- Views for analysts: the common questions as one-liners (documented with examples in docs/sql.md).

CREATE VIEW canonical_events AS
SELECT * FROM chainhook_events WHERE canonical;

-- Events naming an address; a function rather than a view so that the GIN index on
-- affected_addresses serves it.
CREATE FUNCTION events_for_address(principal TEXT) RETURNS SETOF chainhook_events
LANGUAGE sql STABLE AS $$
    SELECT * FROM chainhook_events WHERE canonical AND affected_addresses @> ARRAY[principal]
$$;

CREATE VIEW contract_daily_counts AS
SELECT contract_id, ("timestamp" AT TIME ZONE 'UTC')::date AS day, event_type, count(*) AS events
FROM chainhook_events
WHERE canonical
GROUP BY 1, 2, 3;

-- STX, FT and NFT transfers with the amount as a number (NULL when Chainhook sent none, e.g. NFTs).
CREATE VIEW transfers AS
SELECT id, block_height, "timestamp", tx_hash, event_type,
       CASE event_type WHEN 'stx_transfer_event' THEN 'STX' ELSE event_data->>'asset_identifier' END AS asset,
       event_data->>'sender' AS sender,
       event_data->>'recipient' AS recipient,
       CASE WHEN event_data->>'amount' ~ '^[0-9]+$' THEN (event_data->>'amount')::numeric END AS amount,
       contract_id
FROM chainhook_events
WHERE canonical AND event_type IN ('stx_transfer_event', 'ft_transfer_event', 'nft_transfer_event');

-- Print events with their decoded value and its conventional name field ("event", else "action").
CREATE VIEW print_events AS
SELECT id, block_height, "timestamp", tx_hash, contract_id, event_data->>'topic' AS topic,
       COALESCE(event_data->'value'->>'event', event_data->'value'->>'action') AS event_name,
       event_data->'value' AS value
FROM chainhook_events
WHERE canonical AND event_type = 'print_event';
