"""The server's Prometheus metrics, held in one `Metrics` object that is built once and passed in.

Owns the metric names, labels and help texts, so every protocol counts the same way. Nothing here is
module-global: each `Metrics` has its own `CollectorRegistry`, so a test builds a fresh one instead of
patching process state, and two servers in one process do not mix their numbers.
Label values must come from small fixed sets (a reason code, a protocol name), never from peer input.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds: from a fast API read to a large delivery over a slow link.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric of one server instance, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "mailserver_messages_received", "Messages accepted, by entry point "
            "(mx, submission, submissions, api_send, api_receive).", ["via"], registry=r)
        self.messages_rejected = Counter(
            "mailserver_messages_rejected", "Messages (or, at RCPT, recipients) refused, by entry point and "
            "reason (e.g. relay_denied, unknown_recipient, dmarc, too_large, bad_line_endings, tempfail, "
            "rate_limited).",
            ["via", "reason"], registry=r)
        self.deliveries = Counter(
            "mailserver_deliveries", "Deliveries by outcome: local (into a mailbox here), and for each "
            "remote recipient attempt of the queue delivered, deferred or bounced.",
            ["outcome"], registry=r)
        self.queue_depth = Gauge("mailserver_queue_depth", "Messages waiting in the outbound queue.",
                                 registry=r)
        self.queue_oldest_age = Gauge("mailserver_queue_oldest_age_seconds",
                                      "Age of the oldest message in the outbound queue.", registry=r)
        self.imap_sessions = Gauge("mailserver_imap_sessions", "Open IMAP sessions.", registry=r)
        self.imap_commands = Counter("mailserver_imap_commands", "IMAP commands, by command and result "
                                     "(ok, no, bad).", ["command", "result"], registry=r)
        self.imap_command_duration = Histogram(
            "mailserver_imap_command_duration_seconds", "Time to answer an IMAP command, by command.",
            ["command"], buckets=LATENCY_BUCKETS, registry=r)
        self.smtp_sessions = Counter("mailserver_smtp_sessions", "SMTP connections accepted, by listener.",
                                     ["listener"], registry=r)
        self.smtp_open_sessions = Gauge("mailserver_smtp_open_sessions", "Open SMTP connections, by listener.",
                                        ["listener"], registry=r)
        self.auth_failures = Counter("mailserver_auth_failures", "Failed logins, by protocol "
                                     "(smtp, imap, http).", ["protocol"], registry=r)
        self.rate_limit_hits = Counter("mailserver_rate_limit_hits", "Requests refused by a rate limit, "
                                       "by limiter.", ["limiter"], registry=r)
        self.redis_errors = Counter("mailserver_redis_errors", "Redis calls that failed or timed out "
                                    "(the local fallback was used).", registry=r)
        self.http_request_duration = Histogram(
            "mailserver_http_request_duration_seconds", "HTTP API request latency, by method, route "
            "template and status class.", ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.delivery_duration = Histogram(
            "mailserver_delivery_duration_seconds", "Time from the end of a message's data to its commit "
            "(body checks included), by entry point.",
            ["via"], buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of everything, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
