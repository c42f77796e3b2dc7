"""The PROXY protocol parser: the specification's own examples (haproxy doc/proxy-protocol.txt), errors,
incomplete input, and any input giving a header, None or a clean ProxyHeaderError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcore.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    build_v1,
    build_v2,
    parse,
    starts_like_header,
)

FFFF6 = ":".join(["ffff"] * 8)


def v2(ver_cmd: int, fam: int, payload: bytes, size: int | None = None) -> bytes:
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", len(payload) if size is None else size) + payload


INET = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)
INET6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 1234, 25)

VALID = [
    # proxy-protocol §2.1 examples
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", ("255.255.255.255", 65535),
     ("255.255.255.255", 65535)),
    (f"PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n".encode(), (FFFF6, 65535), (FFFF6, 65535)),
    (b"PROXY TCP6 2001:db8::1 ::1 1 25\r\n", ("2001:db8::1", 1), ("::1", 25)),
    (b"PROXY UNKNOWN\r\n", None, None),
    # the 107-byte worst case of §2.1
    (f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n".encode(), None, None),
    # proxy-protocol §2.2: PROXY over TCP/IPv4 and IPv6, LOCAL, UNSPEC, AF_UNIX, TLVs skipped
    (v2(0x21, 0x11, INET), ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    (v2(0x21, 0x21, INET6), ("::1", 1234), ("::2", 25)),
    (v2(0x21, 0x11, INET + b"\x04\x00\x03abc" + b"\x01\x00\x02h2"), ("192.168.0.1", 56324),
     ("192.168.0.11", 443)),
    (v2(0x20, 0x00, b""), None, None),
    (v2(0x20, 0x11, INET), None, None),  # LOCAL: addresses present but ignored
    (v2(0x21, 0x00, b""), None, None),
    (v2(0x21, 0x31, bytes(216)), None, None),
]


@pytest.mark.parametrize(("data", "source", "destination"), VALID)
def test_valid_headers(data: bytes, source: object, destination: object) -> None:
    header = parse(data + b"EHLO x\r\n")
    assert header is not None
    assert (header.source, header.destination, header.length) == (source, destination, len(data))
    assert header.version == (1 if data.startswith(b"PROXY") else 2)
    assert header.local == (source is None)
    assert len(data) <= 107 or header.version == 2


@pytest.mark.parametrize(("data", "_s", "_d"), VALID)
def test_every_prefix_asks_for_more(data: bytes, _s: object, _d: object) -> None:
    for n in range(len(data)):
        assert parse(data[:n]) is None, n


INVALID = [
    b"EHLO client.example\r\n",
    b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # over 107 bytes
    b"PROXY UNKNOWN " + b"x" * 120,  # no CRLF within 107 bytes
    V2_SIGNATURE[:11] + b"X",
    v2(0x11, 0x11, INET),  # version 1 in a v2 header
    v2(0x22, 0x11, INET),  # command 2
    v2(0x21, 0x12, INET),  # DGRAM
    v2(0x21, 0x41, INET),  # family 4
    v2(0x21, 0x13, INET),  # transport 3
    v2(0x21, 0x11, INET[:8]),  # address block too short for AF_INET
    v2(0x21, 0x21, INET),  # too short for AF_INET6
    v2(0x21, 0x11, b"", size=4000),  # over the length limit
]


@pytest.mark.parametrize("data", INVALID)
def test_invalid_headers(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_builders_round_trip() -> None:
    assert parse(build_v1(("203.0.113.7", 4000), ("198.51.100.1", 25))) == ProxyHeader(
        1, ("203.0.113.7", 4000), ("198.51.100.1", 25), len(build_v1(("203.0.113.7", 4000), ("198.51.100.1", 25))))
    header = parse(build_v2(("2001:db8::7", 4000), ("2001:db8::1", 993)))
    assert header is not None and header.source == ("2001:db8::7", 4000) and header.version == 2
    local = parse(build_v2(None))
    assert local is not None and local.local


@pytest.mark.parametrize(("data", "expected"), [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", True),
    (b"PROXY", True),
    (V2_SIGNATURE + b"\x21", True),
    (V2_SIGNATURE[:4], True),
    (b"EHLO x\r\n", False),
    (b"a1 LOGIN u p\r\n", False),
    (b"\r\n", False),
    (b"PROX", False),
    (b"\x16\x03\x01", False),
])
def test_starts_like_header(data: bytes, expected: bool) -> None:
    assert starts_like_header(data) is expected


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyHeaderError:
        return
    assert header is None or 0 < header.length <= len(data)


@given(st.sampled_from([d for d, _, _ in VALID]), st.binary(max_size=50))
def test_header_then_anything(data: bytes, rest: bytes) -> None:
    header = parse(data + rest)
    assert header is not None and header.length == len(data)


@given(st.sampled_from([b"PROXY ", V2_SIGNATURE + b"\x21\x11"]), st.binary(max_size=200))
def test_signature_then_anything(prefix: bytes, rest: bytes) -> None:
    try:
        parse(prefix + rest)
    except ProxyHeaderError:
        pass
