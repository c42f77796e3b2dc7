"""The server's Prometheus metrics, held in one `Metrics` object that is built once and passed in.

Owns the metric names, labels and help texts, so every protocol counts the same way. Nothing here is
module-global: each `Metrics` has its own `CollectorRegistry`, so a test builds a fresh one instead of
patching process state, and two servers in one process do not mix their numbers.
Label values must come from small fixed sets (a reason code, a protocol name), never from peer input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# Seconds: from a fast API read to a large delivery over a slow link.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric of one server instance, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Other processes counting for this server (the worker processes of `server.workers`): each
        # source returns their expositions, which `render_all` adds to this process's own figures.
        self.sources: list[Callable[[], Awaitable[list[bytes]]]] = []
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
        """The Prometheus text exposition of this process's metrics, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def render_all(self) -> tuple[bytes, str]:
        """As `render`, with the figures of every other process of this server added in: one scrape
        sees the whole server, however many processes share its ports."""
        own, content_type = self.render()
        others = [text for source in self.sources for text in await source()]
        return (merge_expositions([own, *others]) if others else own), content_type


class _Merged:
    """A collector yielding already-built metric families (what `merge_expositions` renders)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge_expositions(texts: list[bytes]) -> bytes:
    """Several processes' text expositions of the same metrics as one: each sample the sum of its values
    in every process (counters, histogram buckets and sums, and gauges such as open sessions add up),
    except a `_created` time, which is the earliest. Families and samples keep their first order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in merged:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)
