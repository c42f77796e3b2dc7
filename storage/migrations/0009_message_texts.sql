-- Full-text SEARCH (issue 8), additive only: the decoded, case-folded text of each message
-- (mailcore.mime.searchtext: its text/* parts with quoted-printable/base64 and the charset undone; binary
-- attachments skipped; at most search.max_text characters) and the codes of its words, under a GIN index,
-- so SEARCH BODY/TEXT tests only the messages that have the needle's words instead of reading every body.
-- Rows are written by the background indexer (storage.bodyindex), never at delivery: delivery and APPEND
-- pay nothing for the index. A message without a row yet (just delivered) is searched in its raw bytes as
-- before; one whose text was cut at the limit (complete = false) in both (storage.mailsearch).
-- Rows go with their message (ON DELETE CASCADE): an expunged message leaves no text behind.
-- Why words, not pg_trgm over the text: extracting a 4 KB text's trigrams costs PostgreSQL about 1-2 ms
-- (measured), as much as storing the message; its ~130 distinct word codes, computed by the indexer, cost
-- the GIN index about 0.1 ms.
CREATE TABLE message_texts (
    message_id  bigint PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    text        text NOT NULL,
    -- word codes (searchtext.word_code) of every word of text; NULL when a word was too long to index
    -- (the message is then tested by its text alone)
    words       integer[],
    complete    boolean NOT NULL
);
CREATE INDEX message_texts_words ON message_texts USING gin (words);
-- lz4 compresses a text in about half the CPU of the default pglz (measured: the indexer's PostgreSQL time
-- 0.36 -> 0.2 ms per message, 5% more space); where this PostgreSQL was built without it, pglz stays.
DO $$
BEGIN
    ALTER TABLE message_texts ALTER COLUMN text SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 not available (%): message_texts.text keeps the default compression', SQLERRM;
END
$$;

-- Every word that occurs in some indexed text, with its code: a needle that is part of a word ("quill"
-- in "zephyrquill") is looked up here first (by trigrams, where pg_trgm exists), giving the codes to find.
-- Words are only added (a word of an expunged message stays: harmless, it matches no message).
CREATE TABLE search_words (
    word  text PRIMARY KEY,
    code  integer NOT NULL
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX search_words_trgm ON search_words USING gin (word gin_trgm_ops)';
    END IF;
END
$$;

-- The two look-ups below are functions of their own because the planner prices LIKE and && on these
-- tables as if scanning them were free (it ignores the detoasting), and would rather read every row of
-- every mailbox than use the index; inside, sequential scans are off.

-- The codes of the words matching a LIKE pattern, or NULL when more than `most` match (too broad to narrow).
CREATE FUNCTION search_word_codes(pattern text, most integer) RETURNS integer[]
    LANGUAGE sql STABLE PARALLEL SAFE SET enable_seqscan = off
    AS $$ SELECT CASE WHEN count(*) > most THEN NULL ELSE COALESCE(array_agg(DISTINCT code), '{}') END
          FROM (SELECT code FROM search_words WHERE word LIKE pattern LIMIT most + 1) AS w $$;

-- The messages having at least one word from each of the three code sets.
CREATE FUNCTION message_texts_with(a integer[], b integer[], c integer[]) RETURNS SETOF bigint
    LANGUAGE sql STABLE PARALLEL SAFE ROWS 100 SET enable_seqscan = off
    AS $$ SELECT message_id FROM message_texts WHERE words && a AND words && b AND words && c $$;
