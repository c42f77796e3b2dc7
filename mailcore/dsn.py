"""Delivery Status Notifications (RFC 3464): building the message, nothing else.

Owns the format: a multipart/report (RFC 6522) with a human-readable part, a message/delivery-status part
(one per-message block, one block per recipient) and the original message (RET=FULL) or its header
(otherwise). Non-ASCII addresses make it a message/global-delivery-status (RFC 6533).

Every value that came from a peer or a sender (remote replies, addresses, ENVID, ORCPT, host names) goes
into a header field or DSN field only through `field_value`, which removes CR, LF, NUL and other
controls, so no peer can add a header line of its own (the header injection of CVE-2024-6923).

It does not decide who gets a DSN or when (the queue's and smtp_in's), beyond reading what a recipient's
NOTIFY asks for (`wants`, RFC 3461 §4.1) for both, and does no I/O.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailcore.lineends import normalize_crlf

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

# A header line may be 998 octets (RFC 5322 §2.1.1); keep well below with room for the field name.
MAX_FIELD = 900
# RET=FULL of a message larger than this returns its header only (RFC 3461 §4.3 allows truncation).
MAX_RETURNED = 10 * 1024 * 1024


def wants(notify: str | None, action: Action) -> bool:
    """Whether a recipient's NOTIFY asks for a DSN with this action (None: RFC 3461 default): failures
    and delays unless NOTIFY=NEVER or a list without them, successes only with NOTIFY=SUCCESS."""
    words = {w.strip().upper() for w in (notify or "").split(",") if w.strip()}
    if "NEVER" in words:
        return False
    if action == "failed":
        return not words or "FAILURE" in words
    if action == "delayed":
        return not words or "DELAY" in words
    return "SUCCESS" in words  # delivered / relayed


@dataclass(frozen=True)
class RecipientReport:
    """What happened to one recipient (RFC 3464 §2.3)."""

    final_recipient: str
    action: Action
    status: str
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: dt.datetime | None = None
    will_retry_until: dt.datetime | None = None


def _unsafe(c: str) -> bool:
    # C0, DEL and C1 controls (C1's NEL and CSI too: a line break to some parsers, an escape sequence to
    # terminals), and the Unicode line and paragraph separators.
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029)


def field_value(value: str, limit: int = MAX_FIELD) -> str:
    """`value` made safe for one header line: controls (CR, LF, NUL, C1, U+2028/2029) become spaces, runs
    of white space one space, and the result is cut to `limit` octets of UTF-8 (not characters: 900
    U+FFFD, what 900 undecodable bytes of a peer's reply become, are 2700 octets, and a line may have 998,
    RFC 5322 §2.1.1), never inside a character. Lone surrogates (undecodable bytes from a peer, decoded
    with surrogateescape) become U+FFFD, so the value can be encoded as UTF-8."""
    cleaned = "".join(" " if _unsafe(c) else "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return " ".join(cleaned.split()).encode("utf-8")[:limit].decode("utf-8", "ignore")


def xtext(value: str) -> str:
    """`value` (ASCII) as RFC 3461 §4 xtext, the form ENVID and ORCPT travel in: "+", "=" and anything
    outside "!".."~" as +HH. The queue keeps both decoded (smtp_in undoes the xtext they came in)."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)


def _address_field(address: str) -> str:
    # RFC 3464 §2.3.2 address-type; RFC 6533 §3 adds "utf-8" for non-ASCII addresses.
    kind = "rfc822" if address.isascii() else "utf-8"
    return f"{kind};{field_value(address)}"


def _original_recipient(orcpt: str) -> str:
    """The Original-Recipient field's value (RFC 3464 §2.3.1) from the queue's ORCPT, kept decoded: decoding
    it again turned a literal "+2B" of the address into "+"."""
    kind, sep, addr = orcpt.partition(";")
    if not sep:
        return _address_field(orcpt)
    return f"{field_value(kind)};{field_value(addr)}"


def _date(value: dt.datetime) -> str:
    return email.utils.format_datetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def _subject(reports: Sequence[RecipientReport]) -> str:
    actions = {r.action for r in reports}
    if "failed" in actions:
        return "Undelivered Mail Returned to Sender"
    if "delayed" in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


def _human_text(reporting_mta: str, reports: Sequence[RecipientReport]) -> str:
    lines = [f"This is the mail system at {reporting_mta}.", ""]
    groups: list[tuple[Action, str]] = [
        ("failed", "Your message could not be delivered to these recipients; it will not be retried:"),
        ("delayed", "Your message has not been delivered yet to these recipients; it is still being retried:"),
        ("delivered", "Your message was delivered to these recipients:"),
        ("relayed", "Your message was passed on to these recipients' servers, which send no further notices:"),
    ]
    for action, intro in groups:
        subset = [r for r in reports if r.action == action]
        if not subset:
            continue
        lines += [intro, ""]
        for r in subset:
            lines.append(f"  <{field_value(r.final_recipient)}>")
            if r.diagnostic:
                # One bound for the whole line: a 253-octet MX name before a 900-octet reply made it
                # over 998 octets (RFC 5322 §2.1.1), and a relay may refuse the DSN for it.
                where = f"{r.remote_mta} said" if r.remote_mta else "reason"
                lines.append(f"    {field_value(f'{where}: {r.diagnostic}')}")
        lines.append("")
    return "\r\n".join(lines) + "\r\n"


# Header field lines (RFC 5322 §2.2: a name of printable ASCII but ":", then ":"), each with its folded
# continuation lines (§2.2.3), from the start of a message.
_FIELD_LINES = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*")


def _split_header(raw: bytes) -> bytes:
    """The header block of `raw`, ended by an empty line: its field lines up to the first line that is
    not one. RET=HDRS asks for the header only (RFC 3461 §4.3): looking for the first CRLF CRLF anywhere
    returned the body of a message without one, or a body after a bare-LF header, as its "header"."""
    match = _FIELD_LINES.match(raw)
    head = raw[: match.end()] if match else b""
    if head and not head.endswith(b"\n"):
        head += b"\r\n"
    return head + b"\r\n"


def build_dsn(*, reporting_mta: str, to: str, reports: Sequence[RecipientReport], original: bytes,
              now: dt.datetime, ret: str | None = None, envid: str | None = None,
              arrival_date: dt.datetime | None = None) -> bytes:
    """A complete DSN message (CRLF line ends) from `MAILER-DAEMON@reporting_mta` to `to`.

    `original` is the message being reported on; it is returned whole only for RET=FULL in a DSN that
    reports a failure (RFC 3461 §4.3: RET asks what a failed DSN returns; a delay or success notice
    returns the header, as Postfix's do, so a sender is not sent its large message again and again)."""
    if not reports:
        raise ValueError("a DSN reports on at least one recipient")
    mta = field_value(reporting_mta)
    boundary = f"=_dsn_{uuid.uuid4().hex}"
    needs_utf8 = not all(r.final_recipient.isascii() and (r.original_recipient or "").isascii()
                         for r in reports)
    # RFC 3464 §2.2: per-message fields, then one block per recipient (§2.3), blocks separated by a blank line.
    per_message = [f"Reporting-MTA: dns;{mta}"]
    if envid:
        per_message.append(f"Original-Envelope-Id: {field_value(envid)}")
    if arrival_date is not None:
        per_message.append(f"Arrival-Date: {_date(arrival_date)}")
    blocks = ["\r\n".join(per_message)]
    for r in reports:
        block = [f"Final-Recipient: {_address_field(r.final_recipient)}"]
        if r.original_recipient:
            block.append(f"Original-Recipient: {_original_recipient(r.original_recipient)}")
        block += [f"Action: {r.action}", f"Status: {field_value(r.status, 16)}"]
        if r.remote_mta:
            block.append(f"Remote-MTA: dns;{field_value(r.remote_mta)}")
        if r.diagnostic:
            block.append(f"Diagnostic-Code: smtp;{field_value(r.diagnostic)}")
        if r.last_attempt is not None:
            block.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until is not None:
            block.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\r\n".join(block))
    status_body = ("\r\n\r\n".join(blocks) + "\r\n").encode("utf-8")

    failure = any(r.action == "failed" for r in reports)
    full = failure and (ret or "").upper() == "FULL" and len(original) <= MAX_RETURNED
    head = _split_header(original)
    returned = normalize_crlf(original if full else head)
    eight_bit = not returned.isascii()
    # RFC 6533 §6.3, RFC 6532 §3.7: an original whose header is UTF-8 (an SMTPUTF8 message) comes back as
    # message/global(-headers), whatever the recipients' addresses: text/rfc822-headers is US-ASCII and
    # message/rfc822 may not carry 8-bit header fields. An 8-bit body alone (8BITMIME) is message/rfc822's.
    utf8_header = not head.isascii()
    if full:
        returned_type = "message/global" if utf8_header else "message/rfc822"
    else:
        returned_type = "message/global-headers" if utf8_header else "text/rfc822-headers"
    status_type = "message/global-delivery-status" if needs_utf8 else "message/delivery-status"

    header = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{field_value(to).replace('<', '').replace('>', '')}>",
        f"Subject: {_subject(reports)}",
        f"Date: {_date(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no auto-replies to this
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + _human_text(mta, reports).encode("utf-8"),
        f"Content-Type: {status_type}\r\n".encode()
        + (b"Content-Transfer-Encoding: 8bit\r\n" if needs_utf8 else b"") + b"\r\n" + status_body,
        f"Content-Type: {returned_type}\r\n".encode()
        + (b"Content-Transfer-Encoding: 8bit\r\n" if eight_bit else b"") + b"\r\n" + returned,
    ]
    out = ("\r\n".join(header) + "\r\n\r\nThis is a MIME-formatted delivery status notification.\r\n").encode()
    for part in parts:
        out += f"\r\n--{boundary}\r\n".encode() + part
        if not part.endswith(b"\r\n"):
            out += b"\r\n"
    return out + f"\r\n--{boundary}--\r\n".encode()
