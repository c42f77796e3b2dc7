-- SEARCH BODY through an optional trigram index (issue 8), additive only. BODY keeps its meaning (the body's
-- raw bytes, compared in PostgreSQL's escape form, case-insensitively for ASCII: storage.mailsearch).
-- The index holds that same text for the body's leading bytes up to 32 KiB or the start of the first
-- base64-encoded part, whichever comes first (random base64 yields thousands of distinct trigrams per
-- KiB: indexing it cost 10-60 ms per message). "It ILIKE the needle" is then a necessary condition for
-- messages whose body is all indexed; the others (attachments, long bodies) are always candidates,
-- listed by the partial index below, and scanned as before.
-- The trigram index itself is NOT built here: it costs 0.7-2 ms per 4 KB message at insert (APPEND
-- 380 -> ~200 msg/s measured), so an admin who wants fast BODY searches creates it (docs/schema.md):
--   CREATE INDEX CONCURRENTLY messages_search_body_trgm ON messages
--       USING gin (mail_search_body(raw, body_offset, parts) gin_trgm_ops);
-- SEARCH uses it once it exists (storage.mailstore.search_indexes), and scans every body without it.
CREATE FUNCTION mail_body_indexed(body_offset integer, parts jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN LEAST(32768, CASE WHEN jsonb_typeof(parts) = 'array' THEN
        (SELECT min((p ->> 'body_start')::integer) FROM jsonb_array_elements(parts) AS p
         WHERE p ->> 'encoding' = 'base64') - body_offset END);

CREATE FUNCTION mail_search_body(raw bytea, body_offset integer, parts jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN encode(substring(raw FROM body_offset + 1 FOR mail_body_indexed(body_offset, parts)), 'escape');

CREATE INDEX messages_body_not_all_indexed ON messages (id)
    WHERE size - body_offset > mail_body_indexed(body_offset, parts);
