-- SEARCH on From/To/Cc/Bcc/Subject through a trigram index (issue 8), additive only.
-- pg_trgm ships with PostgreSQL's contrib (Debian's server package, the embedded wheel); where it is
-- missing (or may not be created by this role) the migration still succeeds and SEARCH runs without
-- the index (storage.mailstore checks for it), exactly as before.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm not available (%): SEARCH runs without trigram indexes', SQLERRM;
END
$$;

-- Everything a header-field SEARCH compares for a message with sync_fields, in one text: the stored
-- fields in PostgreSQL's escape form (what storage.mailsearch matches) and the decoded columns. A match
-- in any of them is a match in this text, so "this text ILIKE the needle" is a necessary condition.
CREATE FUNCTION mail_search_fields(sync_fields bytea, subject text, from_addr text, to_addrs text,
                                   cc_addrs text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(encode(sync_fields, 'escape'), '') || E'\n' || COALESCE(subject, '') || E'\n'
        || COALESCE(from_addr, '') || E'\n' || COALESCE(to_addrs, '') || E'\n' || COALESCE(cc_addrs, '');

-- Insertions go to GIN's pending list (fastupdate off cost APPEND 0.5-1 ms a message); a 1 MB limit
-- (default 4 MB) bounds what each search scans linearly before the list is merged.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX messages_search_fields_trgm ON messages USING gin'
                ' (mail_search_fields(sync_fields, subject, from_addr, to_addrs, cc_addrs) gin_trgm_ops)'
                ' WITH (gin_pending_list_limit = 1024)';
    END IF;
END
$$;
-- Messages stored before sync_fields existed are always candidates (their header is searched instead).
CREATE INDEX messages_without_sync_fields ON messages (id) WHERE sync_fields IS NULL;
