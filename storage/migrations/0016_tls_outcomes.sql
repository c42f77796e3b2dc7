-- How TLS went with other domains' MX hosts, counted per day: the groundwork for TLS-RPT aggregate
-- reports (RFC 8460 §4). One row per (UTC day, recipient domain, policy type, result type, MX host,
-- MX address) with the number of sessions; sending the reports is not built yet. Result types are those
-- of RFC 8460 §4.3 plus 'success'. Not foreign to any other table: the domains are other people's.
CREATE TABLE tls_outcomes (
    day           date   NOT NULL,
    policy_domain text   NOT NULL,           -- the recipient domain, lower case
    policy_type   text   NOT NULL CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
    result_type   text   NOT NULL CHECK (result_type IN (
        'success', 'starttls-not-supported', 'certificate-host-mismatch', 'certificate-expired',
        'certificate-not-trusted', 'validation-failure', 'tlsa-invalid', 'dnssec-invalid', 'dane-required',
        'sts-policy-fetch-error', 'sts-policy-invalid', 'sts-webpki-invalid')),
    mx_host       text   NOT NULL,           -- receiving-mx-hostname
    mx_address    text   NOT NULL,           -- receiving-ip
    sessions      bigint NOT NULL CHECK (sessions > 0),
    detail        text   NOT NULL DEFAULT '', -- the latest failure's text (additional-information)
    PRIMARY KEY (day, policy_domain, policy_type, result_type, mx_host, mx_address)
);
