-- A slimmer header SEARCH trigram index (issue 8): PostgreSQL CPU per delivered message.
-- 0007's messages_search_fields_trgm indexed all 14 sync_fields (Message-ID, References, Date, Content-Type
-- with its boundary, ...: random-looking values, hundreds of distinct trigrams per message), yet SEARCH
-- (storage.mailsearch) narrows with it only FROM/TO/CC/BCC/SUBJECT and HEADER of those five names. The new
-- index holds what those keys compare: the decoded columns, and the stored lines of the fields other than
-- the nine sync fields named below. HEADER of one of those nine (Message-ID, References, ...) is answered by
-- the scan of sync_fields, as HEADER of any field outside sync_fields always was.
-- Measured (docs/schema.md): index upkeep per insert 112 -> 75 us of backend CPU, 680 -> 110 us in a long thread.
-- Cost of this migration on an existing store: building the index reads every message row and holds a
-- SHARE lock on `messages` meanwhile (deliveries and APPENDs wait); docs/operations.md gives the statements
-- that build it beforehand without blocking writes, after which this migration only drops the old index.

-- The decoded header columns SEARCH FROM/TO/CC/SUBJECT compare, in one text. A match in one of them is a
-- match in this text.
CREATE OR REPLACE FUNCTION mail_search_decoded(subject text, from_addr text, to_addrs text, cc_addrs text)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(subject, '') || E'\n' || COALESCE(from_addr, '') || E'\n' || COALESCE(to_addrs, '')
        || E'\n' || COALESCE(cc_addrs, '');

-- sync_fields in PostgreSQL's escape form (what storage.mailsearch matches), lower-cased (ILIKE and the
-- trigrams fold case anyway), without the fields named below: each such field's first line has its name
-- replaced by '#' (no field name starts with it), then every field starting with '#' goes, continuation
-- lines included. Any other line stays as it was, so a needle without a line break that the header regex
-- finds in a From/To/Cc/Bcc/Subject field is found in this text: "it ILIKE the needle" is a necessary
-- condition. A field written differently ("Message-ID :") stays too: more trigrams, same answers.
-- Plain replace() and one small regex: one regex keeping the five fields by name (a look-ahead per line)
-- measured ~35 us per message, paid at each insert and again at each SEARCH recheck. Only expressions
-- PostgreSQL inlines (no sub-select): nothing is planned per insert.
CREATE OR REPLACE FUNCTION mail_search_heads(sync_fields bytea) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN regexp_replace(
        replace(replace(replace(replace(replace(replace(replace(replace(replace(
            E'\n' || lower(encode(sync_fields, 'escape')),
            E'\nmessage-id:', E'\n#'), E'\ndate:', E'\n#'), E'\nreferences:', E'\n#'), E'\nin-reply-to:', E'\n#'),
            E'\ncontent-type:', E'\n#'), E'\nreply-to:', E'\n#'), E'\nx-priority:', E'\n#'),
            E'\npriority:', E'\n#'), E'\nnewsgroups:', E'\n#'),
        E'(?:\n#[^\n]*(?:\n[ \t][^\n]*)*)+', '', 'g');

-- One GIN index over both texts (a condition on either column is answered by it, the two combined by a
-- BitmapOr). Two columns rather than one concatenated text: a candidate whose decoded column matches is
-- accepted on the cheap column at the recheck, without computing mail_search_heads. Built here unless an
-- admin built it beforehand (docs/operations.md); an invalid leftover of a failed CREATE INDEX
-- CONCURRENTLY is rebuilt, since the planner never uses one. Pending list as in 0007.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        RETURN;  -- no trigram index before, none now: SEARCH scans, as with 0007 without pg_trgm
    END IF;
    IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('messages_search_heads_trgm')
               AND NOT indisvalid) THEN
        DROP INDEX messages_search_heads_trgm;
    END IF;
    CREATE INDEX IF NOT EXISTS messages_search_heads_trgm ON messages
        USING gin (mail_search_decoded(subject, from_addr, to_addrs, cc_addrs) gin_trgm_ops,
                   mail_search_heads(sync_fields) gin_trgm_ops)
        WITH (gin_pending_list_limit = 1024);
END
$$;

-- The old index costs every insert and answers nothing any more. Its function stays: an instance still
-- running the previous version (a rolling upgrade) names it in its SEARCH statements until it restarts.
DROP INDEX IF EXISTS messages_search_fields_trgm;
