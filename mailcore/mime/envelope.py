"""The IMAP ENVELOPE of a header block, as wire text (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

Owns: choosing the fields, the Sender/Reply-To defaults, and address structures.
Must not: decode encoded words (clients do), or raise.
"""

from __future__ import annotations

import functools

from mailcore.mime.addresses import Address, parse_addresses
from mailcore.mime.headers import HeaderBlock
from mailcore.mime.wire import nstring, plist, to_text

# Address fields up to this long are parsed once per process and value (`_parsed`): `summarize` needs
# From, To and Cc twice (ENVELOPE and the search columns), and a server sees the same values again and
# again; parsing one costs about 50 µs. The bound keeps the memo small (at most ~1 MB of values).
CACHED_FIELD = 512


def addresses(header: HeaderBlock, name: str) -> list[Address]:
    """The addresses of the first field `name`, parsed leniently (a new list on every call)."""
    value = header.get(name)
    if value is None:
        return []
    if len(value) <= CACHED_FIELD:
        return list(_parsed(value))
    return parse_addresses(to_text(value))


@functools.lru_cache(maxsize=2048)
def _parsed(value: bytes) -> tuple[Address, ...]:
    """The parse of one field value; `Address` is frozen, so sharing the items is safe."""
    return tuple(parse_addresses(to_text(value)))


def _address_list(addrs: list[Address]) -> str:
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
    from_ = addresses(header, "from")
    sender = addresses(header, "sender") or from_
    reply_to = addresses(header, "reply-to") or from_
    fields = [
        nstring(_text(header, "date")),
        nstring(_text(header, "subject")),
        _address_list(from_),
        _address_list(sender),
        _address_list(reply_to),
        _address_list(addresses(header, "to")),
        _address_list(addresses(header, "cc")),
        _address_list(addresses(header, "bcc")),
        nstring(_text(header, "in-reply-to")),
        nstring(_text(header, "message-id")),
    ]
    return "(" + " ".join(fields) + ")"
