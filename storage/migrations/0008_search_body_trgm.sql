-- SEARCH BODY through a trigram index (issue 8), additive only. BODY keeps its meaning (the body's
-- raw bytes, compared in PostgreSQL's escape form, case-insensitively for ASCII: storage.mailsearch);
-- the index holds that same text for the first 32 KiB of each body, so "it ILIKE the needle" is a
-- necessary condition for bodies up to that size; longer bodies are always candidates (the partial
-- index below lists them) and are scanned as before. Without pg_trgm (0007) nothing is built here and
-- SEARCH scans every body, as before.
CREATE FUNCTION mail_search_body(raw bytea, body_offset integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN encode(substring(raw FROM body_offset + 1 FOR 32768), 'escape');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX messages_search_body_trgm ON messages USING gin'
                ' (mail_search_body(raw, body_offset) gin_trgm_ops)';
    END IF;
END
$$;
CREATE INDEX messages_long_body ON messages (id) WHERE size - body_offset > 32768;
