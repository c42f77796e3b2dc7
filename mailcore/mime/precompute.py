"""Provisional precomputation (header split and display fields); replaced by the full IMAP-ready version."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from typing import Any


@dataclass(frozen=True)
class MessageSummary:
    """What is computed once at delivery so readers never re-parse."""

    header: bytes
    body_offset: int
    size: int
    envelope: str | None = None
    bodystructure: str | None = None
    body: str | None = None
    parts: list[Any] = field(default_factory=list)
    subject: str | None = None
    from_addr: str | None = None
    to_addrs: str | None = None
    cc_addrs: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    sent_date: datetime | None = None
    has_attachments: bool = False


def _split(raw: bytes) -> int:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return i + len(sep)
    return len(raw)


def _field(header: bytes, name: bytes) -> str | None:
    lines = header.replace(b"\r\n", b"\n").split(b"\n")
    value = None
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + b":"):
            parts = [line[len(name) + 1:]]
            for cont in lines[i + 1:]:
                if cont[:1] in (b" ", b"\t"):
                    parts.append(cont)
                else:
                    break
            value = b"".join(parts).decode("utf-8", "replace").strip()
            break
    if value is None:
        return None
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def summarize(raw: bytes) -> MessageSummary:
    """Split the header block and pull the display fields."""
    offset = _split(raw)
    header = raw[:offset]
    date = _field(header, b"Date")
    try:
        sent = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        sent = None
    return MessageSummary(
        header=header, body_offset=offset, size=len(raw), subject=_field(header, b"Subject"),
        from_addr=_field(header, b"From"), to_addrs=_field(header, b"To"), cc_addrs=_field(header, b"Cc"),
        message_id=_field(header, b"Message-ID"), in_reply_to=_field(header, b"In-Reply-To"),
        sent_date=sent,
    )
