-- The mail store, version 1. docs/schema.md explains every table and column.

CREATE TABLE domains (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name = lower(name) AND name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id             bigserial PRIMARY KEY,
    domain_id      bigint NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,
    address        text NOT NULL UNIQUE CHECK (address = lower(address)),
    password_hash  text NOT NULL,
    quota_bytes    bigint CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    used_bytes     bigint NOT NULL DEFAULT 0,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_domain ON accounts(domain_id);

-- source is 'local@domain' or '@domain' (catch-all); target is any address, local or remote.
CREATE TABLE aliases (
    id          bigserial PRIMARY KEY,
    domain_id   bigint NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,
    source      text NOT NULL CHECK (source = lower(source)),
    target      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, target)
);
CREATE INDEX aliases_domain ON aliases(domain_id);

-- UIDVALIDITY values are never reused, even for a mailbox deleted and created again (RFC 3501 §2.3.1.1).
CREATE SEQUENCE mailbox_uidvalidity START WITH 1 MAXVALUE 4294967295;

CREATE TABLE mailboxes (
    id             bigserial PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           text NOT NULL,
    special_use    text,
    uidvalidity    bigint NOT NULL DEFAULT nextval('mailbox_uidvalidity'),
    uidnext        bigint NOT NULL DEFAULT 1 CHECK (uidnext >= 1),
    highestmodseq  bigint NOT NULL DEFAULT 1,
    subscribed     boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

-- One row per stored message, shared by every mailbox entry that points at it.
CREATE TABLE messages (
    id              bigserial PRIMARY KEY,
    raw             bytea NOT NULL,
    size            integer NOT NULL,
    sha256          bytea NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    header          bytea NOT NULL,
    body_offset     integer NOT NULL,
    envelope        text,
    bodystructure   text,
    body            text,
    parts           jsonb,
    subject         text,
    from_addr       text,
    to_addrs        text,
    cc_addrs        text,
    message_id      text,
    in_reply_to     text,
    sent_date       timestamptz,
    has_attachments boolean NOT NULL DEFAULT false
);
-- Compressing large bodies costs most of the insert time and saves little on already-encoded mail.
ALTER TABLE messages ALTER COLUMN raw SET STORAGE EXTERNAL;
ALTER TABLE messages ALTER COLUMN header SET STORAGE EXTERNAL;

CREATE TABLE mailbox_messages (
    mailbox_id     bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid            bigint NOT NULL CHECK (uid >= 1),
    message_id     bigint NOT NULL REFERENCES messages(id),
    flags          text[] NOT NULL DEFAULT '{}',
    header_prefix  bytea NOT NULL DEFAULT ''::bytea,
    internal_date  timestamptz NOT NULL DEFAULT now(),
    modseq         bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_messages_message ON mailbox_messages(message_id);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);

CREATE TABLE expunged (
    mailbox_id   bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid          bigint NOT NULL,
    modseq       bigint NOT NULL,
    expunged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);

CREATE TABLE queue (
    id             bigserial PRIMARY KEY,
    message_id     bigint NOT NULL REFERENCES messages(id),
    sender         text NOT NULL,
    account_id     bigint REFERENCES accounts(id) ON DELETE SET NULL,
    envid          text,
    ret            text CHECK (ret IS NULL OR ret IN ('FULL', 'HDRS')),
    state          text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'done')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    next_attempt   timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    lease_owner    text,
    lease_expires  timestamptz,
    signed         boolean NOT NULL DEFAULT false
);
CREATE INDEX queue_due ON queue(next_attempt) WHERE state = 'queued';

CREATE TABLE queue_recipients (
    id          bigserial PRIMARY KEY,
    queue_id    bigint NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    recipient   text NOT NULL,
    domain      text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'deferred', 'delivered', 'bounced')),
    notify      text,
    orcpt       text,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_recipients_queue ON queue_recipients(queue_id);

CREATE TABLE delivery_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    message_id  bigint,
    queue_id    bigint,
    recipient   text,
    event       text NOT NULL,
    detail      text
);
CREATE INDEX delivery_log_at ON delivery_log(at);
