-- TLS-RPT aggregate reports (RFC 8460) sent, one row per (UTC day, policy domain): claimed with
-- INSERT ... ON CONFLICT DO NOTHING before anything is sent, so that across instances and restarts a
-- domain's report for a day goes out at most once (a mailto: report is queued in the claim's own
-- transaction: exactly once). Pruned with tls_outcomes by the report job.
CREATE TABLE tls_reports (
    day           date        NOT NULL,
    policy_domain text        NOT NULL,
    report_id     text        NOT NULL,
    claimed_by    text        NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    outcome       text        NOT NULL DEFAULT '',  -- what came of it: 'sent', 'no-policy', failures (logged too)
    PRIMARY KEY (day, policy_domain)
);
