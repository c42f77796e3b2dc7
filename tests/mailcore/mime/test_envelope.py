"""mailcore/mime/envelope.py: the address fields ENVELOPE and the search columns are built from."""

from __future__ import annotations

import pytest

from mailcore.mime.addresses import parse_addresses
from mailcore.mime.envelope import CACHED_FIELD, addresses, envelope
from mailcore.mime.headers import parse_header

SHORT = b"Mallory Wright <mallory.wright@example.org>, bob@example.net"
LONG = b", ".join(b"user%d@example.org" % i for i in range(60))


@pytest.mark.parametrize("value", [SHORT, LONG, b"undisclosed-recipients:;", b"=?utf-8?q?J=C3=B6rg?= <j@x.test>"])
def test_addresses_same_as_parsing_each_time(value: bytes) -> None:
    """Values under the memo's bound and over it parse as `parse_addresses` does, every time."""
    header = parse_header(b"To: " + value + b"\r\n\r\n", 0, len(value) + 8)
    expected = parse_addresses(value.decode())
    assert addresses(header, "to") == expected
    assert addresses(header, "to") == expected
    assert (len(value) <= CACHED_FIELD) == (value is not LONG)


def test_addresses_returns_a_list_of_its_own() -> None:
    """The memo shares parsed items between calls, never the list a caller may change."""
    header = parse_header(b"From: " + SHORT + b"\r\n\r\n", 0, len(SHORT) + 10)
    first = addresses(header, "from")
    first.clear()
    assert len(addresses(header, "from")) == 2


FROM_A = '(("A" NIL "a" "b.example"))'
ENVELOPES = {
    # RFC 3501 §7.4.2: Sender and Reply-To absent, or present without any address, take From's list
    "empty sender and reply-to": (b"From: A <a@b.example>\r\nSender:\r\nReply-To: \r\n\r\n",
                                  f"(NIL NIL {FROM_A} {FROM_A} {FROM_A} NIL NIL NIL NIL NIL)"),
    "absent sender and reply-to": (b"From: A <a@b.example>\r\nTo: A <a@b.example>\r\n\r\n",
                                   f"(NIL NIL {FROM_A} {FROM_A} {FROM_A} {FROM_A} NIL NIL NIL NIL)"),
    # an empty group is not an empty list: its markers are kept
    "group sender": (b"From: A <a@b.example>\r\nSender: undisclosed:;\r\n\r\n",
                     f'(NIL NIL {FROM_A} ((NIL NIL "undisclosed" NIL) (NIL NIL NIL NIL)) {FROM_A} NIL NIL NIL NIL NIL)'),
    "over the memo's bound": (b"From: A <a@b.example>\r\nCc: " + LONG + b"\r\n\r\n",
                              f"(NIL NIL {FROM_A} {FROM_A} {FROM_A} NIL ("
                              + " ".join(f'(NIL NIL "user{i}" "example.org")' for i in range(60)) + ") NIL NIL NIL)"),
}


@pytest.mark.parametrize("raw, expected", ENVELOPES.values(), ids=ENVELOPES.keys())
def test_envelope_address_lists(raw: bytes, expected: str) -> None:
    """Each list is rendered once per value and remembered: a second message gets the same text."""
    header = parse_header(raw, 0, len(raw))
    assert envelope(header) == expected
    assert envelope(parse_header(raw, 0, len(raw))) == expected
