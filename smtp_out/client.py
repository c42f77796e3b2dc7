"""One SMTP client session: deliver one message to a batch of recipients over one connection.

Owns the conversation with aiosmtplib: connect with our EHLO name, STARTTLS (opportunistic, required and
verified, or implicit TLS), AUTH for a smarthost, SMTPUTF8/8BITMIME negotiation, DSN parameters when the
server offers DSN, then MAIL, one RCPT per recipient and DATA, with the RFC 5321 §4.5.3.2 timeouts.
Every reply becomes a per-recipient `RcptResult`. Failures before the transaction starts raise
`ConnectionFailed`, which tells the caller to try the next address or host.

It touches neither the database nor the breaker; replies are kept as text for the DSN and the log.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass

import aiosmtplib

from config.settings import QueueSettings
from smtp_out.routing import Hop

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Recipient:
    """One envelope recipient as the queue holds it."""

    id: int
    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True)
class Envelope:
    """What one session sends: the same bytes to every recipient."""

    sender: str
    recipients: list[Recipient]
    message: bytes
    envid: str | None = None
    ret: str | None = None

    @property
    def needs_smtputf8(self) -> bool:
        """RFC 6531: non-ASCII addresses or a non-ASCII header need SMTPUTF8."""
        header = self.message.split(b"\r\n\r\n", 1)[0]
        return (not self.sender.isascii() or any(not r.address.isascii() for r in self.recipients)
                or not header.isascii())

    @property
    def eight_bit(self) -> bool:
        """Whether the message has octets above 127 (needs BODY=8BITMIME, RFC 6152)."""
        return not self.message.isascii()


@dataclass(frozen=True)
class RcptResult:
    """The outcome of this session for one recipient."""

    recipient_id: int
    status: str  # 'delivered' | 'deferred' | 'bounced'
    reply: str
    status_code: str
    remote_mta: str


class ConnectionFailed(Exception):
    """No transaction could be started on this address (refused, timeout, bad greeting, TLS policy).

    `breaker` is False when the failure says nothing about the host's health (our TLS policy)."""

    def __init__(self, reason: str, status: str = "4.4.1", breaker: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.breaker = breaker


def status_of(code: int, text: str) -> str:
    """The RFC 3463 status in a reply, or one derived from its code class."""
    m = _ENHANCED.match(text.strip())
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return f"{str(code)[0]}.0.0"


def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}"


def _outcome(code: int) -> str:
    return "delivered" if 200 <= code < 300 else ("bounced" if code >= 500 else "deferred")


@functools.lru_cache(maxsize=16)
def tls_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """Verified (hostname and chain) or opportunistic (any certificate: better than clear text).

    Made once per (verify, ca_file) and shared by every session: building one loads the CA bundle,
    tens of milliseconds on the event loop, which was most of an outbound delivery's time (py-spy)."""
    if verify:
        return ssl.create_default_context(cafile=ca_file or None)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _params(env: Envelope, r: Recipient, dsn: bool) -> list[str]:
    if not dsn:
        return []
    out = []
    if r.notify:
        out.append(f"NOTIFY={r.notify}")
    if r.orcpt and r.orcpt.isascii() and " " not in r.orcpt:
        out.append(f"ORCPT={r.orcpt}")
    return out


async def _connect(address: str, port: int, seconds: float) -> socket.socket:
    """A connected non-blocking socket; a name (left to the system resolver) tries each address."""
    loop = asyncio.get_running_loop()
    try:  # an address already (the usual case: routing looked it up): no getaddrinfo in a thread
        ip = ipaddress.ip_address(address)
    except ValueError:
        infos = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]
    error: OSError = OSError(f"no address for {address}")
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(seconds):
                await loop.sock_connect(sock, sockaddr)
            return sock
        except OSError as exc:  # TimeoutError included
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error


# Postfix's smtp_connection_cache_time_limit (2 s) and a cap on messages per session (servers limit
# transactions per connection; ours allows 10,000).
REUSE_IDLE = 2.0
REUSE_MAX = 100

_SessionKey = tuple[Hop, str, str]  # hop, address, our EHLO name


class SessionCache:
    """Sessions left open after a delivery, per (hop, address), for the next message to the same place,
    as Postfix's smtp client caches connections to a destination with a backlog. A cached session is
    probed with RSET before reuse (a dead or unwilling one is closed and a new one opened, so reuse never
    defers mail), is closed with QUIT after `idle` seconds unused, and after `max_uses` messages."""

    def __init__(self, idle: float = REUSE_IDLE, max_uses: int = REUSE_MAX) -> None:
        self.idle = idle
        self.max_uses = max_uses
        self._idle: dict[_SessionKey, list[tuple[aiosmtplib.SMTP, int, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: _SessionKey) -> tuple[aiosmtplib.SMTP, int] | None:
        """The most recently used idle session for `key` and how many messages it has carried."""
        entries = self._idle.get(key)
        while entries:
            smtp, uses, timer = entries.pop()
            timer.cancel()
            if smtp.is_connected:
                return smtp, uses
            smtp.close()
        return None

    def put(self, key: _SessionKey, smtp: aiosmtplib.SMTP, uses: int) -> None:
        """Keep a session that just finished a transaction (or close it if it has carried enough)."""
        if uses >= self.max_uses:
            self._quit(smtp)
            return
        timer = asyncio.get_running_loop().call_later(self.idle, self._expire, key, smtp)
        self._idle.setdefault(key, []).append((smtp, uses, timer))

    def _expire(self, key: _SessionKey, smtp: aiosmtplib.SMTP) -> None:
        entries = self._idle.get(key, [])
        self._idle[key] = [e for e in entries if e[0] is not smtp]
        if not self._idle[key]:
            del self._idle[key]
        self._quit(smtp)

    def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        task = asyncio.ensure_future(_quit(smtp))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle session (shutdown)."""
        for entries in self._idle.values():
            for smtp, _, timer in entries:
                timer.cancel()
                self._quit(smtp)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


async def _reuse(cache: SessionCache, key: _SessionKey, settings: QueueSettings) -> tuple[aiosmtplib.SMTP, int] | None:
    """A cached session for `key` that answered RSET with 250, if there is one."""
    while (cached := cache.take(key)) is not None:
        smtp, uses = cached
        try:
            if (await smtp.execute_command(b"RSET", timeout=min(settings.command_timeout, 30))).code == 250:
                return smtp, uses
        except (aiosmtplib.SMTPException, OSError):
            pass
        smtp.close()
    return None


def _reusable(results: list[RcptResult]) -> bool:
    # 421: the server is closing the session (RFC 5321 §3.8); a lost session is not connected anyway.
    return not any(r.reply.startswith("421") for r in results)


async def deliver(hop: Hop, address: str, env: Envelope, settings: QueueSettings,
                  local_hostname: str, cache: SessionCache | None = None) -> list[RcptResult]:
    """Run one transaction to `address` (an IP, or a name for the system resolver) for `hop`: on a
    session from `cache` when one is idle there, else on a new one; with a cache, the session is kept
    there afterwards."""
    key = (hop, address, local_hostname)
    reused = await _reuse(cache, key, settings) if cache is not None else None
    if reused is not None:
        smtp, uses = reused
    else:
        smtp, uses = await _session(hop, address, settings, local_hostname), 0
    try:
        results = await _transaction(smtp, env, settings, hop.name)
    except BaseException:  # cancelled (shutdown) or a bug: no polite QUIT to a server that may stall
        smtp.close()
        raise
    if cache is not None and smtp.is_connected and _reusable(results):
        cache.put(key, smtp, uses + 1)
        return results
    if smtp.is_connected:
        try:
            await smtp.quit(timeout=min(settings.command_timeout, 30))
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
    return results


async def _session(hop: Hop, address: str, settings: QueueSettings, local_hostname: str) -> aiosmtplib.SMTP:
    """A new session to `address`, greeted, EHLO'd, with TLS and AUTH as the hop asks."""
    verify = hop.tls in ("required", "implicit")
    try:
        # We connect the socket to the chosen address ourselves, so that TLS (implicit or STARTTLS) is
        # verified against the host's name, not the address. RFC 5321 §4.5.3.2.1: the greeting may take
        # 5 minutes; connect_timeout covers the TCP connect and then, again, the TLS handshake and greeting.
        sock = await _connect(address, hop.port, settings.connect_timeout)
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        raise ConnectionFailed(f"timeout connecting to {address} port {hop.port}") from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {address} port {hop.port}: {exc.strerror or exc}") from exc
    smtp = aiosmtplib.SMTP(hostname=hop.name, sock=sock, local_hostname=local_hostname,
                           timeout=settings.command_timeout, use_tls=hop.tls == "implicit",
                           start_tls=False, tls_context=tls_context(verify, settings.tls_ca_file))
    try:
        try:
            await _open(smtp, hop, settings)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ConnectionFailed(f"authentication refused: {_reply(exc.code, exc.message)}", "4.7.8",
                                   breaker=False) from exc
        except aiosmtplib.SMTPResponseException as exc:  # e.g. 421 or 554 greeting: try the next host
            raise ConnectionFailed(_reply(exc.code, exc.message), status_of(exc.code, exc.message)) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
    except BaseException:
        owned = smtp.transport is None  # never handed to a transport: the socket is ours to close
        smtp.close()
        if owned:
            sock.close()
        raise
    return smtp


async def _open(smtp: aiosmtplib.SMTP, hop: Hop, settings: QueueSettings) -> None:
    await smtp.connect(timeout=settings.connect_timeout)
    await smtp.ehlo()
    if hop.tls != "implicit":
        if smtp.supports_extension("starttls"):
            try:
                await smtp.starttls(server_hostname=hop.name, timeout=settings.command_timeout)
            except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
                if hop.tls == "required":
                    raise ConnectionFailed(f"STARTTLS failed: {exc}", "4.7.5", breaker=False) from exc
                raise
            await smtp.ehlo()
        elif hop.tls == "required":
            # RFC 3207 §4: a client that requires TLS must not go on without it.
            raise ConnectionFailed("TLS required but STARTTLS not offered", "4.7.4", breaker=False)
    if hop.username is not None:
        await smtp.login(hop.username, hop.password or "")


async def _transaction(smtp: aiosmtplib.SMTP, env: Envelope, settings: QueueSettings,
                       mta: str) -> list[RcptResult]:
    def every(status: str, reply: str, code: str) -> list[RcptResult]:
        return [RcptResult(r.id, status, reply, code, mta) for r in env.recipients]

    utf8 = smtp.supports_extension("smtputf8")
    if env.needs_smtputf8 and not utf8:
        # RFC 6531 §3.2: no downgrade exists; the message cannot go to this server, now or later.
        return every("bounced", "550 5.6.7 the message needs SMTPUTF8, which the receiving server "
                     "does not support", "5.6.7")
    if env.eight_bit and not smtp.supports_extension("8bitmime") and not utf8:
        return every("bounced", "554 5.6.3 the message has 8-bit content and the receiving server "
                     "does not support 8BITMIME (no conversion is done)", "5.6.3")
    dsn = smtp.supports_extension("dsn")
    options: list[bytes] = []
    if env.eight_bit:
        options.append(b"BODY=8BITMIME")
    if env.needs_smtputf8:
        options.append(b"SMTPUTF8")
    if dsn and env.ret:
        options.append(f"RET={env.ret}".encode())
    if dsn and env.envid and env.envid.isascii():
        options.append(f"ENVID={env.envid}".encode())
    enc = "utf-8" if env.needs_smtputf8 else "ascii"
    try:
        resp = await smtp.execute_command(b"MAIL", b"FROM:<" + env.sender.encode(enc) + b">", *options)
        if resp.code != 250:
            return every(_outcome(resp.code) if resp.code >= 400 else "deferred",
                         _reply(resp.code, resp.message), status_of(resp.code, resp.message))
        results: dict[int, RcptResult] = {}
        accepted: list[Recipient] = []
        for r in env.recipients:
            resp = await smtp.execute_command(b"RCPT", b"TO:<" + r.address.encode(enc) + b">",
                                              *[p.encode() for p in _params(env, r, dsn)])
            if resp.code in (250, 251):
                accepted.append(r)
            else:
                status = _outcome(resp.code) if resp.code >= 400 else "deferred"
                results[r.id] = RcptResult(r.id, status, _reply(resp.code, resp.message),
                                           status_of(resp.code, resp.message), mta)
        if not accepted:
            await smtp.execute_command(b"RSET")
            return [results[r.id] for r in env.recipients]
        try:
            resp = await smtp.data(env.message, timeout=settings.data_timeout)
            code, text = resp.code, resp.message
        except aiosmtplib.SMTPResponseException as exc:
            code, text = exc.code, exc.message
        for r in accepted:
            results[r.id] = RcptResult(r.id, _outcome(code), _reply(code, text), status_of(code, text), mta)
        return [results[r.id] for r in env.recipients]
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Lost mid-transaction: nothing was accepted for sure, so everything not final is retried.
        # A crash of the peer between its 250 and our reading it is the at-least-once duplicate window.
        reply = f"451 4.4.2 connection lost during the transaction ({type(exc).__name__})"
        return every("deferred", reply, "4.4.2")
