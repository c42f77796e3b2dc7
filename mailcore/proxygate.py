"""Who the client really is: the PROXY-protocol gate in front of every listener's protocol.

`ProxyGate` is the asyncio protocol a listener's server creates for each accepted socket. It decides,
before the protocol above it sees a byte, which address is the client's:

- peer in `TrustedPeers` (the configured load balancers): a PROXY header (v1 or v2) is required first,
  before anything else and before TLS on implicit-TLS ports; its source becomes the client address
  (`ClientAddress.proxied` is then true: no loopback trust, ever). No header within the timeout, or a
  malformed one: the connection is closed.
- any other peer: the socket's peer is the client. A PROXY header from it is refused (the listener's
  `refusal` bytes, then close) and never honoured.

Then the gate steps aside (`transport.set_protocol`), so it costs nothing after the first bytes.
The TLS of implicit-TLS listeners is layered here (an `asyncio.sslproto.SSLProtocol` over the raw
socket) because the header comes before the TLS handshake. The handshake has its own timeout and, with
`handshakes`, holds a slot of its own until it ends (`mailcore.connections`): the protocol above starts,
and counts the connection itself, only once TLS is up, so a client that opens sockets and never finishes
a handshake would otherwise hold each for the whole timeout, counted nowhere. Beyond the caps the socket
is closed at once (there is no TLS yet to say why in). Must not: know SMTP or IMAP.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from mailcore import proxyproto
from mailcore.connections import ConnectionSlots

log = logging.getLogger("mailcore.proxy")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_HANDSHAKE_TIMEOUT = 30.0


@dataclass(frozen=True)
class ClientAddress:
    """The client as the protocols see it. `proxied`: taken from a trusted balancer's PROXY header."""

    ip: str
    port: int
    proxied: bool = False

    @property
    def trusted_loopback(self) -> bool:
        """A direct connection from this machine (never true for a proxied client)."""
        if self.proxied:
            return False
        try:
            return ipaddress.ip_address(self.ip).is_loopback
        except ValueError:
            return False


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR ("10.0.0.5", "10.0.0.0/24", "::1"); ValueError if it is neither."""
    return ipaddress.ip_network(text.strip(), strict=False)


class TrustedPeers:
    """The load balancers whose PROXY headers are believed (addresses and networks)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = [parse_network(e) for e in entries]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: object) -> bool:
        addr = parse_ip(ip) if isinstance(ip, str) else None
        return addr is not None and any(addr in net for net in self.networks)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address as the socket or a PROXY header gave it, or None if it is not one: without an
    IPv6 zone (`fe80::1%eth0`), and an IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
    client, `::ffff:192.0.2.1`) as the IPv4 address it is."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


InnerFactory = Callable[[ClientAddress], asyncio.BaseProtocol]


def feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver bytes to a protocol, plain or buffered (SSLProtocol is a BufferedProtocol)."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = protocol.get_buffer(len(view))
            n = min(len(buf), len(view))
            if n == 0:
                raise RuntimeError("protocol gave an empty buffer")
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)  # type: ignore[attr-defined]


class ProxyGate(asyncio.Protocol):
    """See the module docstring. One per accepted connection."""

    def __init__(self, make_inner: InnerFactory, trusted: TrustedPeers, *, tls: ssl.SSLContext | None = None,
                 refusal: bytes = b"", timeout: float = DEFAULT_HEADER_TIMEOUT, listener: str = "",
                 handshakes: ConnectionSlots | None = None,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
        self.make_inner = make_inner
        self.trusted = trusted
        self.tls = tls
        self.refusal = refusal
        self.timeout = timeout
        self.listener = listener
        self.handshakes = handshakes
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.BaseProtocol | None = None
        self._buf = bytearray()
        self._expect_header = False
        self._timer: asyncio.TimerHandle | None = None
        self._peer = ClientAddress("", 0)

    # --- events from the socket ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's TCPTransport is not).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = ClientAddress(str(peer[0]), int(peer[1])) if peer else ClientAddress("", 0)
        if self._peer.ip in self.trusted:
            self._expect_header = True
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._header_timeout)
        else:  # serve at once (SMTP and IMAP speak first); the first bytes are checked in data_received
            self._start_inner(self._peer)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._buf += data
        if not self._expect_header:
            first = bytes(self._buf)
            self._buf.clear()
            if proxyproto.starts_like_header(first):
                log.warning("PROXY header from an untrusted peer refused", extra={
                    "listener": self.listener, "peer": self._peer.ip})
                self._refuse(tell=self.tls is None)
                return
            self._step_aside(first)
            return
        try:
            header = proxyproto.parse(self._buf)
        except proxyproto.ProxyHeaderError as exc:
            log.warning("bad PROXY header from a trusted peer", extra={
                "listener": self.listener, "peer": self._peer.ip, "error": str(exc)})
            self._refuse(tell=False)
            return
        if header is None:
            return
        self._cancel_timer()
        self._expect_header = False
        rest = bytes(self._buf[header.length:])
        self._buf.clear()
        if header.source is not None:
            client = ClientAddress(header.source[0], header.source[1], proxied=True)
        else:  # LOCAL (the balancer's health check) or an unknown family: the balancer itself, untrusted
            client = ClientAddress(self._peer.ip, self._peer.port, proxied=True)
        self._start_inner(client)
        if self.inner is not None:  # None: over the TLS handshake caps, closed
            self._step_aside(rest)

    def eof_received(self) -> bool | None:
        handler = getattr(self.inner, "eof_received", None)
        return handler() if handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # --- steps --------------------------------------------------------------------------------------

    def _start_inner(self, client: ClientAddress) -> None:
        assert self.transport is not None
        if self.tls is not None:
            if self.handshakes is not None and not self.handshakes.acquire(client.ip):
                log.warning("too many TLS handshakes; connection closed", extra={
                    "listener": self.listener, "peer": client.ip})
                self.transport.abort()
                return
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            waiter.add_done_callback(lambda f: self._handshake_over(client, f))
            self.inner = sslproto.SSLProtocol(loop, self.make_inner(client), self.tls, waiter,  # type: ignore[arg-type]
                                              server_side=True, ssl_handshake_timeout=self.handshake_timeout)
        else:
            self.inner = self.make_inner(client)
        self.inner.connection_made(self.transport)

    def _handshake_over(self, client: ClientAddress, waiter: asyncio.Future[None]) -> None:
        """The TLS handshake ended, well or not (SSLProtocol always wakes its waiter: on success, on an
        error, a timeout or a close): give its slot back. Handshake errors are logged by asyncio."""
        if self.handshakes is not None:
            self.handshakes.release(client.ip)
        if not waiter.cancelled():
            waiter.exception()

    def _step_aside(self, data: bytes) -> None:
        """Hand the socket to the protocol above and give it the bytes read past the header."""
        assert self.transport is not None and self.inner is not None
        self.transport.set_protocol(self.inner)
        if data:
            feed(self.inner, data)

    def _refuse(self, tell: bool) -> None:
        assert self.transport is not None
        self._cancel_timer()
        if tell and self.refusal:
            self.transport.write(self.refusal)
        self.transport.close()

    def _header_timeout(self) -> None:
        self._timer = None
        if self.transport is not None and self._expect_header:
            log.warning("no PROXY header from a trusted peer", extra={
                "listener": self.listener, "peer": self._peer.ip})
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
