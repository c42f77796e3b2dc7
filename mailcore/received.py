"""Trace and origin header fields we add to a message: Received (RFC 5321 §4.4), Message-ID and Date.

Owns the exact text of those fields. Every value that came from a peer (HELO name, addresses, TLS
facts, the authenticated login) passes `clean()` first: no CR, LF, NUL or other control character can
reach a header we write (the header-injection class of CVE-2024-6923), and peer text cannot close the
comment it sits in. Pure functions: no I/O, no clock unless none is passed in; the text of the current
second and of each connection's from/by lines are made once and remembered (a Received field per message).
"""

from __future__ import annotations

import email.utils
import functools
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

# Longest peer-supplied token we copy into a header; a HELO name is at most 255 octets (RFC 5321 §4.5.3.1.2).
MAX_TOKEN = 255


# What `clean_value` and `clean` delete, as str.translate tables (one pass in C, not a generator per
# character: these run for every field of every Received and Authentication-Results we write).
_CONTROLS = dict.fromkeys([*range(0x20), 0x7F])
_CONTROLS_AND_COMMENT = {**_CONTROLS, **dict.fromkeys(map(ord, "()\\"))}


def clean(value: str, limit: int = MAX_TOKEN) -> str:
    """A peer-supplied value made safe for a header: controls, parentheses and backslashes removed."""
    return value.translate(_CONTROLS_AND_COMMENT)[:limit]


def clean_value(value: str, limit: int = 4000) -> str:
    """A header value from a check or a peer, with control characters (CR, LF, NUL, ...) removed."""
    return value.translate(_CONTROLS)[:limit]


@dataclass(frozen=True)
class TraceInfo:
    """The facts of one SMTP transaction that a Received field records."""

    helo: str
    peer_ip: str
    our_hostname: str
    protocol: str  # "SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", and "UTF8..." variants (RFC 3848, 6531)
    queue_id: str
    tls_version: str | None = None
    tls_cipher: str | None = None
    authenticated_as: str | None = None
    recipient: str | None = None  # the "for" clause: only when there is exactly one recipient
    peer_name: str | None = None  # the client's forward-confirmed reverse DNS name, if any


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """The `with` keyword of RFC 3848 (ESMTPS, ESMTPSA, ...) and RFC 6531 §3.7.3 (UTF8SMTP...)."""
    if not esmtp:
        return "SMTP"
    name = "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")
    return ("UTF8" + name[1:]) if utf8 else name


def received_header(info: TraceInfo, when: datetime | None = None) -> bytes:
    """A complete `Received:` field (folded, CRLF-terminated) for the top of the message."""
    head = _from_by(info.helo, info.peer_ip, info.our_hostname, info.tls_version, info.tls_cipher,
                    info.authenticated_as, info.peer_name)
    with_id = f"with {clean(info.protocol, 16)} id {clean(info.queue_id, 64)}"
    if info.recipient:
        with_id += f" for <{clean(info.recipient).replace('<', '').replace('>', '')}>"
    return f"{head}{with_id};\r\n\t{date_time(when)}\r\n".encode()


@functools.lru_cache(maxsize=1024)
def _from_by(helo: str, peer_ip: str, our_hostname: str, tls_version: str | None, tls_cipher: str | None,
             authenticated_as: str | None, peer_name: str | None = None) -> str:
    """The lines of a Received field that are the same for every message of a connection (from, by,
    authenticated as), each followed by the fold: made once per connection, not per message. The
    TCP-info is `(name [address])` with a confirmed name, else `([address])` (RFC 5321 §4.4)."""
    name = clean(peer_name) + " " if peer_name else ""
    lines = [f"Received: from {clean(helo) or 'unknown'} ({name}[{clean(peer_ip, 64)}])"]
    by = f"by {clean(our_hostname)}"
    if tls_version:
        tls = clean(tls_version, 32)
        if tls_cipher:
            tls += " with cipher " + clean(tls_cipher, 64)
        by += f" ({tls})"
    lines.append(by)
    if authenticated_as:
        lines.append(f"(authenticated as {clean(authenticated_as)})")
    return "".join(line + "\r\n\t" for line in lines)


def date_time(when: datetime | None = None) -> str:
    """The RFC 5322 §3.3 date-time of `when`, or of now in the local time zone (Received, Date).

    Now's text is made once per second: a server writing a Received field for every message would
    otherwise format the same second hundreds of times (email.utils takes 5 µs)."""
    if when is not None:
        return email.utils.format_datetime(when)
    return _second(int(time.time()))


@functools.lru_cache(maxsize=1)
def _second(second: int) -> str:
    # as datetime.now().astimezone() gives it (format_datetime drops the fraction of the second)
    return email.utils.format_datetime(datetime.fromtimestamp(second).astimezone())


def message_id_header(hostname: str) -> bytes:
    """A fresh `Message-ID:` field (RFC 5322 §3.6.4) for a message submitted without one."""
    return f"Message-ID: <{secrets.token_hex(16)}@{clean(hostname)}>\r\n".encode()


def date_header(when: datetime | None = None) -> bytes:
    """A `Date:` field (RFC 5322 §3.6.1) for a message submitted without one."""
    return f"Date: {date_time(when)}\r\n".encode()


def new_queue_id() -> str:
    """A short random id naming one transaction in logs, replies and the Received field."""
    return secrets.token_hex(8)
