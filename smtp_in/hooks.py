"""What the process adds around every SMTP session: the shared rate limits and the metrics.

`ListenerHooks` is built once per listener from the process's `mailcore.limits.Limits` and `Metrics`
(both passed in) and called by the session at a few points:

- `connected`: the connection-rate bucket of the client address (`smtp-connections`; 421 4.7.0 when
  empty). The concurrent-connection cap is `mailcore.connections.ConnectionSlots`, apart from this.
- `mail`: on submission, the account's `messages` bucket, shared with the HTTP API (451 4.7.1).
- `replied`: every reply the session sends; a refusal of a message or recipient is counted in
  `messages_rejected` by reason (the table below), so reasons come from named replies, not peer text.
- `accepted`: a committed message, with the time from end of data to commit.

Without limits (tests of the protocol alone) every check passes; without metrics nothing is counted.
It sends nothing to the peer and touches no store.
"""

from __future__ import annotations

from collections.abc import Callable

from mailcore import replies
from mailcore.limits import Limits
from mailcore.metrics import Metrics
from mailcore.replies import Reply
from storage.accounts import Account
from storage.delivery import StoredMessage

# Refusals counted as rejected messages (per recipient for RCPT refusals), by reason label.
REJECTION_REASONS: dict[Reply, str] = {
    replies.RELAY_DENIED: "relay_denied",
    replies.MAILBOX_UNAVAILABLE: "unknown_recipient",
    replies.MAILBOX_FULL: "mailbox_full",
    replies.SENDER_NOT_OWNED: "sender_not_owned",
    replies.AUTH_REQUIRED: "auth_required",
    replies.TOO_MANY_RECIPIENTS: "too_many_recipients",
    replies.MESSAGE_RATE_EXCEEDED: "rate_limited",
    replies.MESSAGE_TOO_BIG: "too_large",
    replies.BARE_CR_OR_LF: "bad_line_endings",  # the SMTP smuggling defence
    replies.MESSAGE_LINE_TOO_LONG: "line_too_long",
    replies.NUL_IN_MESSAGE: "nul",
    replies.DMARC_REJECTED: "dmarc",
    replies.CONTENT_REJECTED: "policy",
    replies.CHECK_TEMPFAIL: "tempfail",
    replies.TEMPORARY_FAILURE: "temporary",
}


class ListenerHooks:
    """Limits and metrics for the sessions of one listener (`via` is its name: mx, submission...)."""

    def __init__(self, via: str, limits: Limits | None = None, metrics: Metrics | None = None) -> None:
        self.via = via
        self.limits = limits
        self.metrics = metrics

    def watch(self, open_sessions: Callable[[], float]) -> None:
        """Report the listener's open sessions at scrape time."""
        if self.metrics is not None:
            self.metrics.smtp_open_sessions.labels(self.via).set_function(open_sessions)

    async def connected(self, ip: str) -> Reply | None:
        """A new connection (already within the concurrency cap): None, or the 421 refusing it."""
        if self.metrics is not None:
            self.metrics.smtp_sessions.labels(self.via).inc()
        if self.limits is None:
            return None
        decision = await self.limits.smtp_connections.take(f"ip:{ip}")
        return None if decision.allowed else replies.CONNECTION_RATE_EXCEEDED

    async def mail(self, account: Account | None) -> Reply | None:
        """MAIL from an authenticated account spends one message of its hourly budget."""
        if account is None or self.limits is None:
            return None
        decision = await self.limits.messages.take(f"account:{account.id}")
        return None if decision.allowed else replies.MESSAGE_RATE_EXCEEDED

    def replied(self, reply: Reply) -> None:
        reason = REJECTION_REASONS.get(reply)
        if reason is not None and self.metrics is not None:
            self.metrics.messages_rejected.labels(self.via, reason).inc()

    def accepted(self, stored: StoredMessage, seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.messages_received.labels(self.via).inc()
        self.metrics.delivery_duration.labels(self.via).observe(seconds)
        if stored.entries:
            self.metrics.deliveries.labels("local").inc(len(stored.entries))
