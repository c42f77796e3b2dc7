-- The outbound queue, version 2 (additive): DKIM signing keys, the signature made once per queue entry,
-- and what a DSN needs to say about each recipient. docs/schema.md explains every table and column.

-- Private keys for signing mail from a hosted domain (RFC 6376). The newest key of a domain signs.
CREATE TABLE dkim_keys (
    id           bigserial PRIMARY KEY,
    domain_id    bigint NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    selector     text NOT NULL CHECK (selector ~ '^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$'),
    algorithm    text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, selector)
);
CREATE INDEX dkim_keys_domain ON dkim_keys(domain_id, created_at DESC);

-- Header lines (the DKIM-Signature) made once before the first attempt and prepended to messages.raw on
-- every attempt, so each attempt sends the same bytes. queue.signed says signing was done (even with no
-- key, when this stays NULL).
ALTER TABLE queue ADD COLUMN signed_prefix bytea;
-- Whether the one 'delayed' DSN (RFC 3464 Action: delayed) has been sent for this entry.
ALTER TABLE queue ADD COLUMN delay_notified boolean NOT NULL DEFAULT false;
CREATE INDEX queue_leased ON queue(lease_expires) WHERE lease_owner IS NOT NULL;

-- RFC 3463 status of the last attempt (e.g. 5.1.1), the host that gave it, and when.
ALTER TABLE queue_recipients ADD COLUMN status_code text;
ALTER TABLE queue_recipients ADD COLUMN remote_mta text;
ALTER TABLE queue_recipients ADD COLUMN last_attempt timestamptz;
