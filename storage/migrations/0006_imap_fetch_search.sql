-- IMAP speed (issue 8), additive only.
-- sync_fields: the header fields a mail client's header sync asks for (storage.headerfields.SYNC_FIELDS),
-- cut from the header at delivery. Small, so stored inline: a 100,000-message sync reads no TOAST.
-- NULL for messages stored before this migration (FETCH then cuts them from `header`).
ALTER TABLE messages ADD COLUMN sync_fields bytea;
ALTER TABLE messages ALTER COLUMN sync_fields SET STORAGE MAIN;
