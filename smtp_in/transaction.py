"""One mail transaction (MAIL .. end of data) and how a received message becomes a committed delivery.

Owns the envelope (sender, recipients with their routes and DSN parameters, the sender-stage SPF task),
the headers we add (Received; Message-ID and Date on submission when missing; the body checks'
Authentication-Results) and remove (Authentication-Results forged with our authserv-id, RFC 8601 §5, on
every listener), the body-check stage and the single call to `storage.delivery.Delivery.commit`. The session answers 250 only after `deliver` returns; any exception
from here is turned into 451 4.3.0 by the session, and nothing is half-stored because commit is one
transaction. Per-connection state (peer, TLS, login) lives in the session, not here.

Quotas are checked by the commit with the message's real size (the RCPT check has only the SIZE= hint).
As Postfix in front of Dovecot's LMTP does with its default quota_full_tempfail = no: a message for
local recipients that are all full is refused, 552 5.2.2 (RFC 3463: mailbox full); one with other
recipients is delivered to them and, DATA having one reply for all, the full ones are reported to the
sender in a failure DSN (RFC 3464), committed before the 250.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from mailcore import replies
from mailcore.address import Address
from mailcore.auth.dkim import sign_message
from mailcore.auth.results import remove_own_results
from mailcore.auth.signing import host_domains
from mailcore.dsn import RecipientReport, build_dsn, wants
from mailcore.mime.precompute import summarize
from mailcore.received import TraceInfo, date_header, message_id_header, protocol_name, received_header
from mailcore.replies import Reply
from smtp_in.checks import Action, BodyCheck, MessageContext, SenderResults, run_body_checks, verdict_reply
from smtp_in.spool import Spool
from storage import dkim_keys
from storage.delivery import (
    Delivery,
    LocalRecipient,
    OverQuota,
    RemoteRecipient,
    StoredMessage,
    commit_notice,
)

log = logging.getLogger(__name__)

# Messages larger than this are summarised in a worker thread so the event loop keeps serving.
SUMMARIZE_IN_THREAD = 256 * 1024
# How much of the message is read to find existing Message-ID and Date fields.
HEADER_SCAN = 256 * 1024
# The largest header block accepted (Exim's header_maxsize): real ones are a few KB, a long ARC chain tens;
# a larger one is only cost (every check, the summary and every IMAP client read each field).
MAX_HEADER = 1024 * 1024


def header_too_large(spool: Spool, limit: int = MAX_HEADER) -> bool:
    """Whether the message's header block (up to the empty line) is longer than `limit` octets."""
    if spool.size <= limit:
        return False
    head = spool.head(limit + 2)
    return not head.startswith(b"\r\n") and b"\r\n\r\n" not in head


@dataclass
class Recipient:
    """One accepted RCPT: the address as given, where it goes and its RFC 3461 parameters; `unlimited`,
    the local accounts its routing knew to have no quota (`checks.RecipientRoute.unlimited`)."""

    address: str
    local: list[tuple[int, str]]
    remote: list[str]
    notify: str | None = None
    orcpt: str | None = None
    unlimited: frozenset[int] = frozenset()


@dataclass
class Transaction:
    """The envelope being built; replaced by a fresh one after each message and on RSET/EHLO."""

    sender: Address | None = None
    started: bool = False  # MAIL accepted (sender may still be the null path)
    smtputf8: bool = False
    body: str | None = None
    size_hint: int | None = None
    ret: str | None = None
    envid: str | None = None
    recipients: list[Recipient] = field(default_factory=list)
    rcpt_count: int = 0
    bdat: bool = False  # a BDAT chunk was taken: DATA may not follow
    sender_check: asyncio.Task[SenderResults] | None = None  # MX: SPF, started when MAIL was accepted

    def discard(self) -> None:
        """The transaction is over (delivered, refused or reset): stop work still running for it."""
        if self.sender_check is not None and not self.sender_check.done():
            self.sender_check.cancel()


@dataclass(frozen=True)
class Origin:
    """Per-connection facts a delivery needs."""

    listener: str
    submission: bool
    peer_ip: str
    helo: str
    esmtp: bool
    hostname: str
    tls_version: str | None
    tls_cipher: str | None
    account_id: int | None
    login: str | None
    peer_name: str | None = None  # forward-confirmed reverse DNS (smtp_in.clientname), for Received


_HEADER_END = re.compile(rb"\r\n\r\n")
_FIELD = re.compile(rb"^(message-id|date)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def missing_origin_fields(head: bytes) -> tuple[bool, bool]:
    """(Message-ID missing, Date missing) judged from the first bytes of a message."""
    end = _HEADER_END.search(head)
    block = head[: end.start() + 2] if end else head
    found = {m.group(1).lower() for m in _FIELD.finditer(block)}
    return b"message-id" not in found, b"date" not in found


async def deliver(pool: asyncpg.Pool, tx: Transaction, origin: Origin, spool: Spool, queue_id: str,
                  body_checks: list[BodyCheck]) -> StoredMessage | Reply:
    """Add our headers, run body checks, commit. Returns what was stored, or the refusal reply."""
    if header_too_large(spool):
        spool.close()
        return replies.HEADER_TOO_BIG
    rcpts = [r.address for r in tx.recipients]
    info = TraceInfo(
        helo=origin.helo, peer_ip=origin.peer_ip, our_hostname=origin.hostname,
        protocol=_protocol(origin, tx), queue_id=queue_id, tls_version=origin.tls_version,
        tls_cipher=origin.tls_cipher, authenticated_as=origin.login,
        recipient=rcpts[0] if len(rcpts) == 1 else None, peer_name=origin.peer_name,
    )
    prefix = received_header(info)
    if origin.submission:
        no_id, no_date = missing_origin_fields(spool.head(HEADER_SCAN))
        if no_id:
            prefix += message_id_header(origin.hostname)
        if no_date:
            prefix += date_header()
    raw = spool.read_all(prefix)
    spool.close()
    mailbox = "INBOX"
    headers: list[bytes] = []
    if body_checks:
        sender_results = await tx.sender_check if tx.sender_check is not None else None
        ctx = MessageContext(listener=origin.listener, peer_ip=origin.peer_ip, helo=origin.helo,
                             mail_from=str(tx.sender or ""), recipients=tuple(rcpts),
                             tls=origin.tls_version is not None, authenticated_as=origin.login,
                             sender_results=sender_results)
        verdict, headers = await run_body_checks(body_checks, ctx, raw)
        refusal = verdict_reply(verdict)
        if refusal is not None:
            return refusal
        if verdict.action is Action.QUARANTINE:
            mailbox = "Junk"
    # After the checks (which see the message as it came) and before ours go in.
    strip_forged_results(raw, len(prefix), origin.hostname)
    if headers:
        added = b"".join(headers)
        raw[len(prefix):len(prefix)] = added  # in place: still one copy of the message
    if len(raw) > SUMMARIZE_IN_THREAD:
        summary = await asyncio.to_thread(summarize, raw)
    else:
        summary = summarize(raw)
    # A submission is listed in the account's sent messages (/v1/sent, message status), in the commit.
    sent_via = None
    if origin.submission and origin.account_id is not None:
        sent_via = "api" if origin.listener == "api" else "smtp"
    delivery = Delivery(sender=str(tx.sender) if tx.sender else "", envid=tx.envid, ret=tx.ret,
                        account_id=origin.account_id, sent_via=sent_via,
                        sent_recipients=rcpts if sent_via else [])
    for rcpt in tx.recipients:
        for account_id, reached_as in rcpt.local:
            delivery.add_local(LocalRecipient(account_id, reached_as, mailbox, unlimited=account_id in rcpt.unlimited))
        for address in rcpt.remote:
            delivery.add_remote(RemoteRecipient(address, notify=rcpt.notify, orcpt=rcpt.orcpt))
    try:
        stored = await delivery.commit(pool, raw, summary)
    except OverQuota:
        return replies.QUOTA_EXCEEDED  # every recipient full: nothing stored
    if stored.over_quota:
        await bounce_over_quota(pool, tx, origin.hostname, raw, {r.account_id for r in stored.over_quota})
    return stored


async def bounce_over_quota(pool: asyncpg.Pool, tx: Transaction, reporting_mta: str, raw: bytes | bytearray,
                            full: set[int]) -> None:
    """Tell the sender, in one failure DSN, of the recipients not delivered to because their account
    (`full`) had no room: each RCPT reaching one of them, as given, unless its NOTIFY declines failures
    (RFC 3461 §4.1); never a null sender (§6.2). Routed as the queue's DSNs (`commit_notice`)."""
    reports: dict[str, RecipientReport] = {}
    now = dt.datetime.now(dt.UTC)
    for rcpt in tx.recipients:
        for account_id, reached_as in rcpt.local:
            if account_id in full and reached_as not in reports and wants(rcpt.notify, "failed"):
                reports[reached_as] = RecipientReport(
                    final_recipient=reached_as, action="failed", status=replies.QUOTA_EXCEEDED.enhanced,
                    original_recipient=rcpt.orcpt, diagnostic=str(replies.QUOTA_EXCEEDED), last_attempt=now)
    log.info("over quota: not delivered to some recipients", extra={
        "sender": str(tx.sender or ""), "accounts": sorted(full), "dsn": bool(tx.sender and reports)})
    if tx.sender is None or not reports:
        return
    build = functools.partial(build_dsn, reporting_mta=reporting_mta, to=str(tx.sender), now=now,
                              reports=list(reports.values()), original=bytes(raw), ret=tx.ret, envid=tx.envid,
                              arrival_date=now)
    key = await _dsn_key(pool, reporting_mta)
    if key is None:
        dsn = await asyncio.to_thread(build) if len(raw) > SUMMARIZE_IN_THREAD else build()
    else:  # public-key maths over the whole DSN: in a thread, whatever its size
        dsn = await asyncio.to_thread(_signed, build, key)
    summary = await asyncio.to_thread(summarize, dsn) if len(dsn) > SUMMARIZE_IN_THREAD else summarize(dsn)
    await commit_notice(pool, tx.sender, dsn, summary)


async def _dsn_key(pool: asyncpg.Pool, hostname: str) -> dkim_keys.DKIMKey | None:
    """The key our DSNs are signed with, as the queue signs its own (`smtp_out.bounce`): the host name's
    domain's or a parent's (their From is MAILER-DAEMON@hostname), None when we hold neither. One query:
    a DSN from here is rare (a recipient over quota)."""
    domains = host_domains(hostname)
    found = await dkim_keys.signing_keys(pool, domains)
    return next((found[d] for d in domains if d in found), None)


def _signed(build: Callable[[], bytes], key: dkim_keys.DKIMKey) -> bytes:
    """The DSN `build` makes, with its DKIM-Signature in front; unsigned (logged) if signing fails: a
    broken key must not lose the notice."""
    dsn = build()
    try:
        return sign_message(dsn, key.domain, key.selector, key.private_key, key.algorithm) + dsn
    except Exception:
        log.exception("DKIM signing of a DSN failed; sending it unsigned", extra={"domain": key.domain})
        return dsn


def strip_forged_results(raw: bytearray, start: int, authserv_id: str) -> None:
    """Remove, in place, every Authentication-Results field of the header block at `raw[start:]` that
    claims our authserv-id: RFC 8601 §5, it cannot be ours since we have not added one yet."""
    end = raw.find(b"\r\n\r\n", start)
    end = len(raw) if end < 0 else end + 2
    head = bytes(raw[start:end])
    if b"authentication-results" not in head.lower():
        return
    kept = remove_own_results(head, authserv_id)
    if len(kept) != len(head):
        raw[start:end] = kept


def _protocol(origin: Origin, tx: Transaction) -> str:
    return protocol_name(esmtp=origin.esmtp, tls=origin.tls_version is not None,
                         authenticated=origin.login is not None, utf8=tx.smtputf8)
