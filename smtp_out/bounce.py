"""Who is told what about a queue entry, and getting that DSN on its way.

Owns the notification policy (RFC 3461 §4.1): failures and delays are reported unless the recipient was
submitted with NOTIFY=NEVER or a NOTIFY list without them; successes only with NOTIFY=SUCCESS; nothing,
ever, for a null sender (no loops, no backscatter); NOTIFY itself is read by `mailcore.dsn.wants`. The
route of a DSN (into the sender's mailbox when the sender is one of our accounts, else back into the
queue, in both cases with a null sender) is `storage.delivery.commit_notice`, which smtp_in uses too;
the DSN is DKIM-signed here when the worker hands a signer over (see `send_dsn`).

The DSN is committed in the caller's transaction, the one that records the results it reports, so a
result and its notice are written together or not at all. The message itself is built by `mailcore.dsn`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from mailcore.address import AddressError, parse_address
from mailcore.dsn import Action, RecipientReport, build_dsn
from mailcore.dsn import wants as wants  # the NOTIFY reading, shared with smtp_in; the worker asks it here
from mailcore.mime.precompute import MessageSummary, summarize
from storage.delivery import commit_notice
from storage.queue import QueuedRecipient

log = logging.getLogger(__name__)

# A DSN returning more of the original than this is built and summarised in a worker thread (smtp_in's
# threshold for summarising): a returned message of many MIME parts took seconds on the loop.
BUILD_IN_THREAD = 256 * 1024


@dataclass(frozen=True)
class Notice:
    """One recipient line of a DSN to send."""

    recipient: QueuedRecipient
    action: Action
    status: str
    diagnostic: str | None
    remote_mta: str | None
    will_retry_until: dt.datetime | None = None


async def send_dsn(conn: asyncpg.Connection, *, sender: str, notices: list[Notice], original: bytes,
                   reporting_mta: str, now: dt.datetime, ret: str | None, envid: str | None,
                   arrival: dt.datetime | None, postmaster: str | None,
                   sign: Callable[[bytes], bytes] | None = None) -> bool:
    """Build one DSN for `notices` and commit it (in `conn`'s transaction) towards `sender`.

    `sign` (the DSN's bytes -> a DKIM-Signature field) signs it once built, before it is stored: the
    composer is what knows a DSN is ours (From MAILER-DAEMON@reporting_mta), so the queue, which
    signs relayed null-sender mail for nobody, does not have to guess. A signer that fails leaves the
    DSN unsigned, logged. Returns False, sending nothing, for a null or unroutable sender
    (`storage.delivery.commit_notice`)."""
    if not sender or not notices:
        return False
    try:
        to = parse_address(sender)
    except AddressError:
        log.warning("DSN not sent: unusable envelope sender", extra={"sender": sender})
        return False
    build = functools.partial(
        _built, reporting_mta=reporting_mta, to=str(to), now=now, original=original, ret=ret, envid=envid,
        arrival_date=arrival,
        reports=[RecipientReport(final_recipient=n.recipient.recipient, action=n.action, status=n.status,
                                 original_recipient=n.recipient.orcpt, remote_mta=n.remote_mta,
                                 diagnostic=n.diagnostic, last_attempt=now,
                                 will_retry_until=n.will_retry_until) for n in notices], sign=sign)
    # The event loop never blocks: the worker calls this with other deliveries in flight (signing is
    # public-key maths over the whole DSN: always in the thread).
    in_thread = sign is not None or len(original) > BUILD_IN_THREAD
    raw, summary = await asyncio.to_thread(build) if in_thread else build()
    return await commit_notice(conn, to, raw, summary, postmaster)


def _built(*, sign: Callable[[bytes], bytes] | None, **kwargs: Any) -> tuple[bytes, MessageSummary]:
    """The DSN `build_dsn(**kwargs)` makes, signed by `sign` if given, and its summary for the mailbox
    (CPU only, no I/O)."""
    raw = build_dsn(**kwargs)
    if sign is not None:
        try:
            raw = sign(raw) + raw
        except Exception:  # a broken key must not lose the DSN: it goes unsigned, loudly
            log.exception("DKIM signing of a DSN failed; sending it unsigned")
    return raw, summarize(raw)
