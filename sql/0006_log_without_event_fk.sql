-- Ingest: the change log's foreign key to chainhook_events cost a lookup (an after-row trigger) per
-- logged change, 10-15% of a delivery's time in the database. Log rows are written only by the
-- delivery transaction that inserted or updated the event they name, in that same transaction, so
-- the key could never fail. What it also did, refuse to delete or truncate events the log names, the
-- triggers below keep doing (events are never deleted), and tests check that every logged change
-- names a stored event.
ALTER TABLE chainhook_changes DROP CONSTRAINT chainhook_changes_event_id_fkey;

CREATE FUNCTION chainhook_events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chainhook_events is append-only: the change log names its rows'
        USING ERRCODE = 'restrict_violation';
END
$$;

-- Statement level: no cost per inserted row.
CREATE TRIGGER chainhook_events_no_delete BEFORE DELETE ON chainhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION chainhook_events_are_append_only();

-- TRUNCATE empties the events with the log (`TRUNCATE chainhook_changes, chainhook_events, ...`), as the
-- key allowed, never without it. After the statement's truncations: the log is empty by then when it
-- was truncated too.
CREATE FUNCTION chainhook_events_truncated_with_the_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM chainhook_changes WHERE event_id IS NOT NULL) THEN
        RAISE EXCEPTION 'chainhook_events can only be truncated with chainhook_changes, which names its rows'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER chainhook_events_truncate_with_the_log AFTER TRUNCATE ON chainhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION chainhook_events_truncated_with_the_log();
