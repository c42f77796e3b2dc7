"""The seam between the API and the submission path: `Submitter.submit` (send) and `.receive` (ingest).

`POST /v1/send` must take exactly the path SMTP submission takes (sender ownership, Message-ID/Date,
DKIM signing, local delivery or the queue), and `POST /v1/receive` the path of the MX listener. The API
only knows this protocol; the composition root decides what implements it.

`SmtpInSubmitter` implements it with smtp_in's own steps, so the API is one more client of exactly the
SMTP paths rather than a copy of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from mailcore.address import Address, AddressError, parse_address
from storage.accounts import Account

if TYPE_CHECKING:
    from smtp_in.senderauth import SenderAuthentication


class SubmissionRefused(Exception):
    """The message was not accepted. `reason` is a fixed code (for metrics and the problem type); the
    text is safe to show to the client."""

    REASONS = ("sender_not_owned", "unknown_recipient", "not_local", "mailbox_full", "too_large", "policy",
               "dmarc", "temporary")

    def __init__(self, reason: str, text: str, recipients: list[str] | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.recipients = recipients or []


@dataclass(frozen=True)
class Envelope:
    """One message to submit or receive: envelope sender and recipients, the bytes, where it came from.

    `client_ip` is the HTTP client's address. For `receive`, `smtp_client_ip` and `smtp_helo` are the SMTP
    client the upstream gateway took the message from, as the gateway tells us (None: not told); sender
    authentication (SPF) is judged on them, never on the gateway's own address."""

    mail_from: str
    recipients: list[str]
    raw: bytes
    client_ip: str
    tls: bool
    smtp_client_ip: str | None = None
    smtp_helo: str | None = None


@dataclass(frozen=True)
class Accepted:
    """What was stored: the message row, its Message-ID, and where each recipient's copy went; `bounced`,
    local recipients whose mailbox was full (the sender gets a DSN, as over SMTP)."""

    message_id: int
    rfc_message_id: str | None
    local: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    bounced: list[str] = field(default_factory=list)


class Submitter(Protocol):
    """The submission and inbound delivery paths, as the API calls them."""

    async def submit(self, account: Account, envelope: Envelope) -> Accepted:
        """Submit on behalf of an authenticated account (sender must be its own)."""

    async def receive(self, envelope: Envelope) -> Accepted:
        """Deliver to local recipients as the MX listener would."""


def _parse(text: str, what: str) -> Address:
    try:
        return parse_address(text.strip())
    except AddressError as exc:
        raise SubmissionRefused("policy", f"invalid {what} {text!r}: {exc}") from None


class SmtpInSubmitter:
    """The `Submitter` on smtp_in's own steps: `check_sender`, `route_recipient` (quota included) and
    `deliver` (Received, Message-ID/Date on submission, body checks, one `Delivery.commit`). The API is
    then one more client of exactly the SMTP paths: submission for `submit`, MX for `receive`.

    `sender_auth` is the MX's `smtp_in.senderauth.SenderAuthentication` (the process's one): `receive`
    starts its SPF stage as MAIL would and runs it first among the body checks, so a received message gets
    the same Authentication-Results, forged-results stripping and DMARC verdicts (reject, quarantine to
    Junk, tempfail) as one taken by the MX."""

    def __init__(self, pool: asyncpg.Pool, hostname: str, max_size: int, postmaster: str = "",
                 spool_threshold: int = 1024 * 1024, body_checks: list[Any] | None = None,
                 sender_auth: SenderAuthentication | None = None) -> None:
        self.pool = pool
        self.hostname = hostname
        self.max_size = max_size
        self.postmaster = postmaster
        self.spool_threshold = spool_threshold
        self.sender_auth = sender_auth
        self.body_checks = ([sender_auth] if sender_auth is not None else []) + list(body_checks or [])

    async def submit(self, account: Account, envelope: Envelope) -> Accepted:
        from smtp_in.checks import check_sender

        sender = _parse(envelope.mail_from, "sender")
        refusal = await check_sender(self.pool, account, sender)
        if refusal is not None:
            raise _from_reply(refusal, f"{account.address} may not send as {sender}")
        return await self._run(envelope, sender, account, submission=True)

    async def receive(self, envelope: Envelope) -> Accepted:
        sender = _parse(envelope.mail_from, "sender") if envelope.mail_from else None
        return await self._run(envelope, sender, None, submission=False)

    async def _run(self, envelope: Envelope, sender: Address | None, account: Account | None, *,
                   submission: bool) -> Accepted:
        from mailcore.received import new_queue_id
        from smtp_in.checks import route_recipient
        from smtp_in.spool import Spool
        from smtp_in.transaction import Origin, Recipient, Transaction, deliver

        if len(envelope.raw) > self.max_size:
            raise SubmissionRefused("too_large", f"message exceeds {self.max_size} bytes")
        tx = Transaction(sender=sender, started=True, size_hint=len(envelope.raw))
        local: list[str] = []
        for text in envelope.recipients:
            rcpt = _parse(text, "recipient")
            route = await route_recipient(self.pool, rcpt, authenticated=submission, postmaster=self.postmaster,
                                          size_hint=len(envelope.raw))
            if not hasattr(route, "local"):
                raise _from_reply(route, f"{rcpt}: {route}", [str(rcpt)])
            tx.recipients.append(Recipient(address=str(rcpt), local=route.local, remote=route.remote,
                                           unlimited=route.unlimited))
            tx.rcpt_count += 1
            if route.local:
                local.append(str(rcpt))
        if submission:
            peer_ip, helo = envelope.client_ip, "http-api"
        else:  # the SMTP client as the gateway saw it; "unknown" in Received when it did not say
            peer_ip, helo = envelope.smtp_client_ip or envelope.client_ip, envelope.smtp_helo or ""
            if self.sender_auth is not None:
                # No address from the gateway: SPF records none, "client address unknown" (senderauth).
                tx.sender_check = self.sender_auth.start_spf(envelope.smtp_client_ip or "unknown", helo,
                                                             str(sender or ""))
        origin = Origin(listener="api", submission=submission, peer_ip=peer_ip, helo=helo,
                        esmtp=True, hostname=self.hostname, tls_version="TLS" if envelope.tls else None,
                        tls_cipher=None, account_id=account.id if account else None,
                        login=account.address if account else None)
        spool = Spool(self.spool_threshold)
        spool.write(envelope.raw)
        try:
            result = await deliver(self.pool, tx, origin, spool, new_queue_id(),
                                   [] if submission else self.body_checks)
        except (OSError, asyncpg.PostgresError) as exc:
            raise SubmissionRefused("temporary", "temporary failure; try again later") from exc
        finally:
            spool.close()
            tx.discard()
        if not hasattr(result, "message_id"):
            raise _from_reply(result, str(result))
        rfc_id = await self.pool.fetchval("SELECT message_id FROM messages WHERE id = $1", result.message_id)
        queued = [a for r in tx.recipients for a in r.remote]
        full = {r.account_id for r in result.over_quota}
        bounced = [r.address for r in tx.recipients if r.local and all(a in full for a, _ in r.local)]
        return Accepted(message_id=result.message_id, rfc_message_id=rfc_id,
                        local=[a for a in local if a not in bounced], queued=list(dict.fromkeys(queued)),
                        bounced=bounced)


def _from_reply(reply: Any, text: str, recipients: list[str] | None = None) -> SubmissionRefused:
    """An SMTP refusal as an API one (the reply's enhanced code decides the reason)."""
    from mailcore import replies

    reason = {replies.SENDER_NOT_OWNED: "sender_not_owned", replies.MAILBOX_UNAVAILABLE: "unknown_recipient",
              replies.RELAY_DENIED: "not_local", replies.MAILBOX_FULL: "mailbox_full",
              replies.QUOTA_EXCEEDED: "mailbox_full",
              replies.DMARC_REJECTED: "dmarc", replies.HEADER_TOO_BIG: "too_large"}.get(reply)
    if reason is None:
        reason = "temporary" if 400 <= reply.code < 500 else "policy"
    if reason == "unknown_recipient" and recipients:
        text = "no such recipient: " + ", ".join(recipients)
    elif reason == "not_local" and recipients:
        text = f"{recipients[0]} is not a local recipient"
    return SubmissionRefused(reason, text, recipients)
