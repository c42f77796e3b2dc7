-- Recipient domains' MTA-STS policies (RFC 8461), as the outbound queue last fetched them. RFC 8461 §5
-- asks senders to cache a policy for its max_age: kept here, a policy outlives a restart (a fresh process
-- would otherwise deliver opportunistically until its first fetch, which an attacker on the path can
-- make fail) and every instance shares it. Not foreign to any other table: the domains are other people's.
CREATE TABLE mta_sts_policies (
    domain     text PRIMARY KEY,            -- lower case, no final dot
    policy_id  text NOT NULL,               -- the id of the _mta-sts record it was fetched for
    policy     text NOT NULL,               -- the policy file as fetched (parsed again when loaded)
    fetched_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL         -- fetched_at + max_age
);
