"""mailcore/mime/envelope.py: the address fields ENVELOPE and the search columns are built from."""

from __future__ import annotations

import pytest

from mailcore.mime.addresses import parse_addresses
from mailcore.mime.envelope import CACHED_FIELD, addresses
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
