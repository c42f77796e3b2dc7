"""The PROXY protocol, versions 1 and 2, as a load balancer sends it before the client's first byte.

Sans-IO: `parse(data)` takes the bytes received so far and returns the header (`ProxyHeader`), None when
more bytes are needed, or raises `ProxyHeaderError` when the bytes cannot begin a valid header. It knows
nothing of sockets, trust or TLS; `mailcore.proxygate` decides whose headers count.
The specification is haproxy's doc/proxy-protocol.txt ("The PROXY protocol", versions 1 and 2);
sections below are cited from it as `# proxy-protocol §2.1`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

# proxy-protocol §2.1: "PROXY" ... CRLF, at most 107 bytes with the CRLF.
V1_PREFIX = b"PROXY "
V1_MAX = 107
# proxy-protocol §2.2: the 12-byte signature, then version/command, family/transport, length.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# Addresses (at most 216 bytes, AF_UNIX) plus TLVs: haproxy itself sends a few hundred at most.
V2_MAX_PAYLOAD = 2048

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_T_UNSPEC, _T_STREAM = 0x0, 0x1
_ADDRESS_LENGTHS = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header (the connection must be closed, never guessed at)."""


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed header.

    `source` and `destination` are (address, port), or None when the header carries no usable address
    (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or AF_UNIX): the receiver then uses the connection's own
    endpoints (proxy-protocol §2.1, §2.2). `length` is how many bytes the header took.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int

    @property
    def local(self) -> bool:
        return self.source is None


def starts_like_header(data: bytes) -> bool:
    """Whether a connection's first bytes begin a PROXY header (used to refuse one from the untrusted)."""
    data = bytes(data[:12])
    return (len(data) >= 5 and V1_PREFIX.startswith(data[:6])) or (
        len(data) >= 4 and V2_SIGNATURE.startswith(data))


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """Parse a header at the start of `data`: the header, None if incomplete, or ProxyHeaderError."""
    data = bytes(data[: max(V1_MAX, V2_FIXED + V2_MAX_PAYLOAD)])
    if not data:
        return None
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyHeaderError("not a PROXY header")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("not a PROXY header")
        return _parse_v2(data)
    raise ProxyHeaderError("not a PROXY header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyHeaderError("v1 header not ended by CRLF within 107 bytes")
        return None
    length = end + 2
    if length > V1_MAX:
        raise ProxyHeaderError("v1 header longer than 107 bytes")
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) < 2 or parts[0] != "PROXY":
        raise ProxyHeaderError("v1 header malformed")
    if parts[1] == "UNKNOWN":  # proxy-protocol §2.1: the rest of the line is ignored
        return ProxyHeader(1, None, None, length)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyHeaderError("v1 header malformed")
    kind = ipaddress.IPv4Address if parts[1] == "TCP4" else ipaddress.IPv6Address
    try:
        src, dst = kind(parts[2]), kind(parts[3])
    except ValueError:
        raise ProxyHeaderError("v1 address invalid") from None
    sport, dport = _v1_port(parts[4]), _v1_port(parts[5])
    return ProxyHeader(1, (str(src), sport), (str(dst), dport), length)


def _v1_port(text: str) -> int:
    # proxy-protocol §2.1: a decimal number 0-65535, no leading zero
    if not text.isascii() or not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError("v1 port invalid")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError("v1 port invalid")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, fam, size = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("v2 version not 2")
    command = ver_cmd & 0xF
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError("v2 command unknown")
    if size > V2_MAX_PAYLOAD:
        raise ProxyHeaderError("v2 header too long")
    length = V2_FIXED + size
    if len(data) < length:
        return None
    if command == _V2_LOCAL:  # proxy-protocol §2.2: health checks and the like; addresses ignored
        return ProxyHeader(2, None, None, length)
    family, transport = fam >> 4, fam & 0xF
    if family > _AF_UNIX or transport > 2:
        raise ProxyHeaderError("v2 family or transport unknown")
    if family == _AF_UNSPEC or transport == _T_UNSPEC:
        return ProxyHeader(2, None, None, length)
    if transport != _T_STREAM:
        raise ProxyHeaderError("v2 transport is not a stream")
    need = _ADDRESS_LENGTHS[family]
    if size < need:
        raise ProxyHeaderError("v2 address block too short")
    block = data[V2_FIXED: V2_FIXED + need]  # TLVs after it are skipped
    if family == _AF_UNIX:
        return ProxyHeader(2, None, None, length)
    if family == _AF_INET:
        src4, dst4 = ipaddress.IPv4Address(block[0:4]), ipaddress.IPv4Address(block[4:8])
        sport, dport = struct.unpack("!HH", block[8:12])
        return ProxyHeader(2, (str(src4), sport), (str(dst4), dport), length)
    src6, dst6 = ipaddress.IPv6Address(block[0:16]), ipaddress.IPv6Address(block[16:32])
    sport, dport = struct.unpack("!HH", block[32:36])
    return ProxyHeader(2, (str(src6), sport), (str(dst6), dport), length)


def build_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header (for tests and tools)."""
    kind = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {kind} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def build_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None,
             tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY over TCP when `source` is given, else LOCAL (for tests and tools)."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    destination = destination or (("::" if ":" in source[0] else "0.0.0.0"), 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    fam = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(block) + len(tlvs)) + block + tlvs
