-- The HTTP API: tokens, idempotency keys and the record of what an account sent. docs/schema.md explains them.

CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    hash        bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['send', 'read', 'admin']::text[] AND scopes <> '{}'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used   timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX api_tokens_account ON api_tokens(account_id);

-- One row per (account, Idempotency-Key). response is NULL while the first request is in flight.
CREATE TABLE api_idempotency (
    account_id    bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  bytea NOT NULL,
    status        integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX api_idempotency_expires ON api_idempotency(expires_at);

-- Messages an account submitted (over the API; SMTP submission may record here too).
CREATE TABLE sent_messages (
    account_id  bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    message_id  bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    via         text NOT NULL CHECK (via IN ('api', 'smtp')),
    recipients  text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, message_id)
);
CREATE INDEX sent_messages_message ON sent_messages(message_id);
