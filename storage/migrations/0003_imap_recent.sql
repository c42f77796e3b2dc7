-- IMAP \Recent (RFC 3501 §2.3.2): the first UID no session has yet been told about as recent.
-- A session that selects the mailbox read-write claims [recent_uid, uidnext) and moves it up, so
-- exactly one session sees each message as \Recent. Additive: 0002 is the outbound team's.
ALTER TABLE mailboxes ADD COLUMN recent_uid bigint NOT NULL DEFAULT 1;
