"""The IMAP ENVELOPE of a header block, as wire text (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

Owns: choosing the fields, the Sender/Reply-To defaults, and address structures.
Must not: decode encoded words (clients do), or raise.
"""

from __future__ import annotations

from mailcore.mime.addresses import Address, parse_addresses
from mailcore.mime.headers import HeaderBlock
from mailcore.mime.wire import nstring, plist, to_text


def addresses(header: HeaderBlock, name: str) -> list[Address]:
    """The addresses of the first field `name`, parsed leniently."""
    value = header.get(name)
    if value is None:
        return []
    return parse_addresses(to_text(value))


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
