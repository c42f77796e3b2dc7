-- The header SEARCH index keyed by account (issue 8): SEARCH SUBJECT/FROM/TO/CC/BCC in one mailbox no
-- longer rechecks every other account's matching messages.
-- 0012's messages_search_heads_trgm covers the messages of every account, so the candidates of a search
-- were every message in the store with the needle's trigrams: a search of a 10,000-message mailbox beside a
-- 100,000-message one fetched and rechecked ten times its own matches (measured: 6.5 ms alone, 15-16 ms
-- with the other mailbox in the store). Each message now lists the accounts whose mailboxes hold it, and
-- the index has that list as its first column: GIN intersects the account's key with the needle's trigrams
-- inside one index scan, and only this account's candidates reach the heap.
-- A message is shared between accounts only when one delivery is for several of them; COPY stays within an
-- account (storage.mailstore adds the account when it does not). An expunged entry leaves its account in
-- the list: a superset only adds candidates, which the exact conditions then drop.
-- Upgrading: every message row is rewritten once here (docs/operations.md gives the cost and how to do it
-- beforehand, in batches, on a big store). Statements are idempotent, so that work done beforehand is kept.
-- During a rolling upgrade, instances of the previous version insert messages without the list (NULL):
-- SEARCH takes those as candidates through messages_without_accounts, which holds only them.

ALTER TABLE messages ADD COLUMN IF NOT EXISTS accounts bigint[];

-- The old index is dropped before the rows are rewritten, so that the rewrite does not maintain it.
DROP INDEX IF EXISTS messages_search_heads_trgm;

UPDATE messages m SET accounts = owners.accounts
FROM (SELECT mm.message_id, array_agg(DISTINCT b.account_id ORDER BY b.account_id) AS accounts
      FROM mailbox_messages mm JOIN mailboxes b ON b.id = mm.mailbox_id
      GROUP BY mm.message_id) AS owners
WHERE m.id = owners.message_id AND m.accounts IS NULL;
-- in no mailbox (only queued for remote delivery): no account searches it
UPDATE messages SET accounts = '{}' WHERE accounts IS NULL;

CREATE INDEX IF NOT EXISTS messages_without_accounts ON messages (id) WHERE accounts IS NULL;

-- As 0012's index, with the account list first (the built-in GIN array_ops: one key per account). Without
-- pg_trgm there was no header index and there is none now.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('messages_search_heads_by_account')
               AND NOT indisvalid) THEN
        DROP INDEX messages_search_heads_by_account;
    END IF;
    CREATE INDEX IF NOT EXISTS messages_search_heads_by_account ON messages
        USING gin (accounts, mail_search_decoded(subject, from_addr, to_addrs, cc_addrs) gin_trgm_ops,
                   mail_search_heads(sync_fields) gin_trgm_ops)
        WITH (gin_pending_list_limit = 1024);
END
$$;
