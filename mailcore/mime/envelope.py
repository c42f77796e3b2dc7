"""The IMAP ENVELOPE of a header block, as wire text (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

Owns: choosing the fields, the Sender/Reply-To defaults, and address structures.
Must not: decode encoded words (clients do), or raise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from mailcore.mime.addresses import Address, parse_addresses
from mailcore.mime.headers import HeaderBlock
from mailcore.mime.wire import nstring, plist, to_text

# Address fields up to this long are parsed and rendered once per process and value (`_memo`): `summarize`
# needs From, To and Cc twice (ENVELOPE and the search columns) and From up to three times in ENVELOPE
# (as Sender and Reply-To too), and a server sees the same values again and again (the recipient's own
# address above all); parsing one costs about 50 µs, rendering it 5-10 µs. The bound keeps the memo small
# (at most ~3 MB of values and their wire text).
CACHED_FIELD = 512


def addresses(header: HeaderBlock, name: str) -> list[Address]:
    """The addresses of the first field `name`, parsed leniently (a new list on every call)."""
    value = header.get(name)
    if value is None:
        return []
    if len(value) <= CACHED_FIELD:
        return list(_memo(value)[0])
    return parse_addresses(to_text(value))


def _address_field(header: HeaderBlock, name: str) -> str:
    """The ENVELOPE address list of the first field `name` (NIL when absent or without addresses)."""
    value = header.get(name)
    if value is None:
        return "NIL"
    if len(value) <= CACHED_FIELD:
        return _memo(value)[1]
    return _address_list(parse_addresses(to_text(value)))


@functools.lru_cache(maxsize=2048)
def _memo(value: bytes) -> tuple[tuple[Address, ...], str]:
    """The parse of one field value and its ENVELOPE wire text; `Address` is frozen, so sharing the
    items is safe."""
    parsed = tuple(parse_addresses(to_text(value)))
    return parsed, _address_list(parsed)


def _address_list(addrs: Sequence[Address]) -> str:
    # RFC 3501 §9 env-from etc.: "(" 1*address ")" / nil
    return plist(
        [
            "(" + " ".join(nstring(v) for v in (a.name, a.adl, a.mailbox, a.host)) + ")"
            for a in addrs
        ]
    )


def _text(header: HeaderBlock, name: str) -> str | None:
    value = header.get(name)
    return None if value is None else to_text(value)


def envelope(header: HeaderBlock) -> str:
    """ENVELOPE wire text: date subject from sender reply-to to cc bcc in-reply-to message-id.

    RFC 3501 §7.4.2: an absent or empty Sender / Reply-To takes the From value.
    """
    from_ = _address_field(header, "from")
    sender = _address_field(header, "sender")
    reply_to = _address_field(header, "reply-to")
    fields = [
        nstring(_text(header, "date")),
        nstring(_text(header, "subject")),
        from_,
        from_ if sender == "NIL" else sender,  # an empty list renders as NIL, and only that does
        from_ if reply_to == "NIL" else reply_to,
        _address_field(header, "to"),
        _address_field(header, "cc"),
        _address_field(header, "bcc"),
        nstring(_text(header, "in-reply-to")),
        nstring(_text(header, "message-id")),
    ]
    return "(" + " ".join(fields) + ")"
