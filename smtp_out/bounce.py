"""Who is told what about a queue entry, and getting that DSN on its way.

Owns the notification policy (RFC 3461 §4.1): failures and delays are reported unless the recipient was
submitted with NOTIFY=NEVER or a NOTIFY list without them; successes only with NOTIFY=SUCCESS; nothing,
ever, for a null sender (no loops, no backscatter). And the route of a DSN: into the sender's mailbox
when the sender is one of our accounts, else back into the queue, in both cases with a null sender.

The DSN is committed in the caller's transaction, the one that records the results it reports, so a
result and its notice are written together or not at all. The message itself is built by `mailcore.dsn`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from mailcore.address import AddressError, parse_address
from mailcore.dsn import Action, RecipientReport, build_dsn
from mailcore.mime.precompute import MessageSummary, summarize
from storage import accounts
from storage.delivery import Delivery, LocalRecipient, RemoteRecipient
from storage.queue import QueuedRecipient

log = logging.getLogger(__name__)

# A DSN returning more of the original than this is built and summarised in a worker thread (smtp_in's
# threshold for summarising): a returned message of many MIME parts took seconds on the loop.
BUILD_IN_THREAD = 256 * 1024


def wants(notify: str | None, action: Action) -> bool:
    """Whether a recipient's NOTIFY asks for a DSN with this action (None: RFC 3461 default)."""
    words = {w.strip().upper() for w in (notify or "").split(",") if w.strip()}
    if "NEVER" in words:
        return False
    if action == "failed":
        return not words or "FAILURE" in words
    if action == "delayed":
        return not words or "DELAY" in words
    return "SUCCESS" in words  # delivered / relayed


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
                   arrival: dt.datetime | None, postmaster: str | None) -> bool:
    """Build one DSN for `notices` and commit it (in `conn`'s transaction) towards `sender`.

    Returns False, sending nothing, for a null or unroutable sender."""
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
                                 will_retry_until=n.will_retry_until) for n in notices])
    # The event loop never blocks: the worker calls this with other deliveries in flight.
    raw, summary = await asyncio.to_thread(build) if len(original) > BUILD_IN_THREAD else build()
    # RFC 3461 §6.2 / RFC 5321 §4.5.5: a DSN goes out with a null reverse-path, so it is never bounced.
    delivery = Delivery(sender="")
    if await accounts.is_local_domain(conn, to.domain):
        route = await accounts.resolve_recipient(conn, to, postmaster or None)
        if not route:
            log.warning("DSN dropped: the local sender no longer exists", extra={"sender": str(to)})
            return False
        for account_id, reached_as in route.local:
            delivery.add_local(LocalRecipient(account_id, reached_as))
        for target in route.remote:
            delivery.add_remote(RemoteRecipient(target, notify="NEVER"))
    else:
        delivery.add_remote(RemoteRecipient(str(to), notify="NEVER"))
    await delivery.commit(conn, raw, summary)
    return True


def _built(**kwargs: Any) -> tuple[bytes, MessageSummary]:
    """The DSN `build_dsn(**kwargs)` makes, and its summary for the mailbox (CPU only, no I/O)."""
    raw = build_dsn(**kwargs)
    return raw, summarize(raw)
