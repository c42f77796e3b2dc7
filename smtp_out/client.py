"""One SMTP client session: deliver one message to a batch of recipients over one connection.

Owns the conversation: with aiosmtplib, connect with our EHLO name, STARTTLS (opportunistic, required and
verified, or implicit TLS) and AUTH for a smarthost; then, on the session taken over (`smtp_out.session`),
SMTPUTF8/8BITMIME negotiation, DSN parameters when the server offers DSN, MAIL, one RCPT per recipient
and DATA, pipelined when the server offers PIPELINING, with the RFC 5321 §4.5.3.2 timeouts.
Every reply becomes a per-recipient `RcptResult`. Failures before the transaction starts raise
`ConnectionFailed`, which tells the caller to try the next address or host.

Opportunistic TLS is a bonus, never a reason not to deliver (RFC 3207 §4; RFC 7435's opportunistic
security): a STARTTLS the server refuses (454) goes on in plaintext on the same session, and a handshake
that fails (which leaves nothing of the session) is followed at once by a plaintext session to the same
address, as Postfix does at security level "may". TLS a hop requires is never given up.

How each new session's STARTTLS went (an RFC 8460 §4.3.1 result type, for TLS-RPT) is told to the caller's
`tls_outcome`, which counts it (`smtp_out.tlsrpt`).

It touches neither the database nor the breaker; replies are kept as text for the DSN and the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from config.settings import QueueSettings
from mailcore.dsn import field_value, xtext
from smtp_out.routing import Hop
from smtp_out.session import Session, SessionLost, command, dot_stuffed

log = logging.getLogger(__name__)

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
        reason = field_value(reason)  # it quotes the peer: kept, logged and reported, so one clean line
        super().__init__(reason)
        self.reason = reason
        # It defers (the next address, host or attempt may do better), so its status is a temporary one
        # (RFC 3463 class 4): a '554 5.7.1' greeting gave deferrals and delay DSNs with Status: 5.7.1.
        self.status = "4" + status[1:] if status.startswith("5") else status
        self.breaker = breaker


# RFC 3463 §3.6 X.5.0, "other or undefined protocol status": a reply this step does not expect (a 2xx or
# 3xx out of place, a code outside 2xx-5xx). Temporary: the next attempt may meet a saner server.
PROTOCOL_ERROR = "4.5.0"


def status_of(code: int, text: str) -> str:
    """The RFC 3463 status in a reply, or one derived from its code class (X.5.0, temporary, for a code
    outside 2xx, 4xx and 5xx)."""
    if not (200 <= code < 300 or 400 <= code < 600):
        return PROTOCOL_ERROR
    m = _ENHANCED.match(text.strip())
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return f"{str(code)[0]}.0.0"


def _reply(code: int, text: str) -> str:
    """A remote reply as kept, logged and put in a DSN: one line without controls, of bounded length
    (`mailcore.dsn.field_value`). A negative code is aiosmtplib's own (an unparsable reply)."""
    return field_value(f"{code} {text}" if code >= 0 else text)


def _judged(code: int, text: str, ok: range | tuple[int, ...]) -> tuple[str, str]:
    """(outcome, RFC 3463 status) of a reply to a step whose success codes are `ok`: 4xx defers, 5xx
    bounces, and anything else (a success code of another step, such as 250 to DATA, or a code outside
    2xx-5xx) is a protocol error that defers."""
    if code in ok:
        return "delivered", status_of(code, text)
    if 400 <= code < 600:
        return ("bounced" if code >= 500 else "deferred"), status_of(code, text)
    return "deferred", PROTOCOL_ERROR


_VERIFIED: dict[str, ssl.SSLContext] = {}  # CA file ("" for the system's) -> context, made once


def opportunistic_tls() -> ssl.SSLContext:
    """Any certificate: better than clear text (RFC 7435). No CA bundle is loaded for it, so making
    one costs nothing; `ssl.create_default_context()` would read every system CA on the event loop."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def tls_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """Verified (hostname and chain) or opportunistic. A verified context is made once per CA file, in
    a thread: loading the CA bundle took half a second of the event loop on a busy machine (py-spy),
    in the middle of the first delivery after start."""
    if not verify:
        return _OPPORTUNISTIC
    ctx = _VERIFIED.get(ca_file)
    if ctx is None:
        ctx = _VERIFIED.setdefault(ca_file, await asyncio.to_thread(ssl.create_default_context,
                                                                    cafile=ca_file or None))
    return ctx


_OPPORTUNISTIC = opportunistic_tls()


def _params(env: Envelope, r: Recipient, dsn: bool) -> list[str]:
    if not dsn:
        return []
    out = []
    if r.notify:
        out.append(f"NOTIFY={r.notify}")
    if r.orcpt and r.orcpt.isascii():
        # RFC 3461 §4.2: addr-type ";" xtext. The queue keeps the address decoded; a "+" or "=" in it, or
        # a space, sent as it is would change it or break the RCPT line's parameters.
        # An ASCII "utf-8" address is an rfc822 one (RFC 6533 §3), whose xtext this is.
        kind, _, address = r.orcpt.partition(";")
        out.append(f"ORCPT={'rfc822' if kind == 'utf-8' else kind};{xtext(address)}")
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
    used without a probe: if it turns out dead or closing at the first reply (MAIL's), nothing can have
    been accepted, so the message goes on a new session instead (reuse never defers mail). It is closed
    with QUIT after `idle` seconds unused, and after `max_uses` messages."""

    def __init__(self, idle: float = REUSE_IDLE, max_uses: int = REUSE_MAX) -> None:
        self.idle = idle
        self.max_uses = max_uses
        self._idle: dict[_SessionKey, list[tuple[Session, int, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: _SessionKey) -> tuple[Session, int] | None:
        """The most recently used idle session for `key` and how many messages it has carried."""
        entries = self._idle.get(key)
        while entries:
            session, uses, timer = entries.pop()
            timer.cancel()
            if session.is_connected:
                return session, uses
            session.close()
        return None

    def put(self, key: _SessionKey, session: Session, uses: int) -> None:
        """Keep a session that just finished a transaction (or close it if it has carried enough)."""
        if uses >= self.max_uses:
            self._quit(session)
            return
        timer = asyncio.get_running_loop().call_later(self.idle, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, uses, timer))

    def _expire(self, key: _SessionKey, session: Session) -> None:
        entries = self._idle.get(key, [])
        self._idle[key] = [e for e in entries if e[0] is not session]
        if not self._idle[key]:
            del self._idle[key]
        self._quit(session)

    def _quit(self, session: Session) -> None:
        task = asyncio.ensure_future(session.quit(5))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle session (shutdown)."""
        for entries in self._idle.values():
            for session, _, timer in entries:
                timer.cancel()
                self._quit(session)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class _Stale(Exception):
    """A cached session was found dead or closing at its first reply: nothing was accepted on it."""


def _reusable(results: list[RcptResult]) -> bool:
    # 421: the server is closing the session (RFC 5321 §3.8); a lost session is not connected anyway.
    return not any(r.reply.startswith("421") for r in results)


async def deliver(hop: Hop, address: str, env: Envelope, settings: QueueSettings,
                  local_hostname: str, cache: SessionCache | None = None,
                  tls_outcome: TLSOutcomeSink | None = None) -> list[RcptResult]:
    """Run one transaction to `address` (an IP, or a name for the system resolver) for `hop`: on a
    session from `cache` when one is idle there, else on a new one; with a cache, the session is kept
    there afterwards. `tls_outcome` is told how the STARTTLS of each new session went (RFC 8460 §4.3.1;
    not for implicit TLS, a session that never got as far as EHLO, or the plaintext retry)."""
    key = (hop, address, local_hostname)
    cached = cache.take(key) if cache is not None else None
    if cached is not None:
        try:
            return await _deliver_on(cached[0], cached[1], key, env, settings, cache)
        except _Stale:
            pass  # closed already; a new session below
    try:
        session = await _session(hop, address, settings, local_hostname, tls_outcome=tls_outcome)
    except _HandshakeFailed as exc:
        log.info("opportunistic STARTTLS failed; retrying without TLS", extra={
            "host": hop.name, "address": address, "error": field_value(str(exc))})
        session = await _session(hop, address, settings, local_hostname, plaintext=True)
    return await _deliver_on(session, 0, key, env, settings, cache)


async def _deliver_on(session: Session, uses: int, key: _SessionKey, env: Envelope, settings: QueueSettings,
                      cache: SessionCache | None) -> list[RcptResult]:
    try:
        results, clean = await _transaction(session, env, settings, key[0].name, reused=uses > 0)
    except BaseException:  # stale, cancelled (shutdown) or a bug: no polite QUIT to a server that may stall
        session.close()
        raise
    if cache is not None and clean and session.is_connected and _reusable(results):
        cache.put(key, session, uses + 1)
    elif session.is_connected:
        await session.quit(min(settings.command_timeout, 30))
    return results


# RFC 8460 §4.3.1: what a TLS negotiation with an MX host came to, as a TLS-RPT result type.
TLSResult = Literal["success", "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                    "certificate-not-trusted", "validation-failure"]
# (result, detail) for each new session's TLS negotiation (`deliver`'s `tls_outcome`).
TLSOutcomeSink = Callable[[TLSResult, str], None]

# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) that have a TLS-RPT name.
_EXPIRED = {10}  # X509_V_ERR_CERT_HAS_EXPIRED
_HOST_MISMATCH = {62}  # X509_V_ERR_HOSTNAME_MISMATCH
# unable to get issuer certificate / issuer certificate locally; self-signed leaf / in chain; untrusted
_NOT_TRUSTED = {2, 18, 19, 20, 21, 27}


def tls_failure(exc: BaseException) -> TLSResult:
    """The RFC 8460 §4.3.1 result type of a failed STARTTLS: a refusal (454) is STARTTLS not being
    supported; a certificate that did not verify says why; anything else (a broken handshake, a lost
    connection) is the catch-all validation-failure."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return "starttls-not-supported"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _EXPIRED:
            return "certificate-expired"
        if code in _HOST_MISMATCH:
            return "certificate-host-mismatch"
        if code in _NOT_TRUSTED:
            return "certificate-not-trusted"
    return "validation-failure"


class _HandshakeFailed(Exception):
    """An opportunistic STARTTLS handshake failed; the connection is gone (see the module text)."""


async def _session(hop: Hop, address: str, settings: QueueSettings, local_hostname: str,
                   plaintext: bool = False, tls_outcome: TLSOutcomeSink | None = None) -> Session:
    """A new session to `address`, greeted, EHLO'd, with TLS and AUTH as the hop asks (`plaintext`: no
    STARTTLS, after an opportunistic handshake failed)."""
    tls = await tls_context(hop.tls in ("required", "implicit"), settings.tls_ca_file)
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
                           start_tls=False, tls_context=tls)
    try:
        try:
            await _open(smtp, hop, settings, plaintext, tls_outcome)
        except _HandshakeFailed:
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ConnectionFailed(f"authentication refused: {_reply(exc.code, exc.message)}", "4.7.8",
                                   breaker=False) from exc
        except aiosmtplib.SMTPResponseException as exc:  # e.g. 421 or 554 greeting: try the next host
            raise ConnectionFailed(_reply(exc.code, exc.message), status_of(exc.code, exc.message)) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
        if smtp.transport is None or smtp.transport.is_closing():
            raise ConnectionFailed("connection lost after EHLO")
    except BaseException:
        owned = smtp.transport is None  # never handed to a transport: the socket is ours to close
        smtp.close()
        if owned:
            sock.close()
        raise
    # Set up: from here on the session is ours, for pipelining (see smtp_out.session).
    return Session(smtp.transport, dict(smtp.esmtp_extensions))


async def _open(smtp: aiosmtplib.SMTP, hop: Hop, settings: QueueSettings, plaintext: bool,
                tls_outcome: TLSOutcomeSink | None = None) -> None:
    def outcome(result: TLSResult, detail: str = "") -> None:
        if tls_outcome is not None:
            tls_outcome(result, field_value(detail))

    await smtp.connect(timeout=settings.connect_timeout)
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        # RFC 5321 §4.1.4: a server without extensions refuses EHLO with 500, 501, 502 or 550; HELO then
        # (no STARTTLS, PIPELINING or 8BITMIME on that session). A 4xx or a lost connection stays a failure.
        if exc.code not in (500, 501, 502, 550) or not smtp.is_connected:
            raise
        await smtp.helo()
    if hop.tls != "implicit" and not plaintext:
        if smtp.supports_extension("starttls"):
            try:
                await smtp.starttls(server_hostname=hop.name, timeout=settings.command_timeout)
            except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
                outcome(tls_failure(exc), f"{type(exc).__name__}: {exc}")
                if hop.tls == "required":
                    raise ConnectionFailed(f"STARTTLS failed: {exc}", "4.7.5", breaker=False) from exc
                if not isinstance(exc, aiosmtplib.SMTPResponseException) or not smtp.is_connected:
                    raise _HandshakeFailed(f"{type(exc).__name__}: {exc}") from exc
                # refused (RFC 3207 §4: 454 TLS not available): the session goes on as it was
            else:
                outcome("success")
                await smtp.ehlo()
        else:
            outcome("starttls-not-supported", "STARTTLS not offered")
            if hop.tls == "required":
                # RFC 3207 §4: a client that requires TLS must not go on without it.
                raise ConnectionFailed("TLS required but STARTTLS not offered", "4.7.4", breaker=False)
    if hop.username is not None:
        await smtp.login(hop.username, hop.password or "")


def _mail_command(env: Envelope, session: Session) -> bytes:
    dsn = session.supports("dsn")
    options: list[bytes] = []
    if env.eight_bit:
        options.append(b"BODY=8BITMIME")
    if env.needs_smtputf8:
        options.append(b"SMTPUTF8")
    if dsn and env.ret:
        options.append(f"RET={env.ret}".encode())
    if dsn and env.envid and env.envid.isascii():
        options.append(f"ENVID={xtext(env.envid)}".encode())  # kept decoded (RFC 3461 §4.4: xtext)
    enc = "utf-8" if env.needs_smtputf8 else "ascii"
    return command(b"MAIL", b"FROM:<" + env.sender.encode(enc) + b">", *options)


def _rcpt_command(env: Envelope, r: Recipient, session: Session) -> bytes:
    enc = "utf-8" if env.needs_smtputf8 else "ascii"
    return command(b"RCPT", b"TO:<" + r.address.encode(enc) + b">",
                   *[p.encode() for p in _params(env, r, session.supports("dsn"))])


async def _transaction(session: Session, env: Envelope, settings: QueueSettings, mta: str,
                       reused: bool = False) -> tuple[list[RcptResult], bool]:
    """MAIL, RCPT for each recipient, DATA and the message; pipelined (RFC 2920) when the server offers
    it, else one command at a time. Returns the results and whether the session ended the transaction
    cleanly (so it may carry another). On a `reused` session, a lost connection or a 421 at the first
    reply raises _Stale: nothing was accepted, and the caller uses a new session."""
    def every(status: str, reply: str, code: str) -> list[RcptResult]:
        return [RcptResult(r.id, status, reply, code, mta) for r in env.recipients]

    utf8 = session.supports("smtputf8")
    if env.needs_smtputf8 and not utf8:
        # RFC 6531 §3.2: no downgrade exists; the message cannot go to this server, now or later.
        return every("bounced", "550 5.6.7 the message needs SMTPUTF8, which the receiving server "
                     "does not support", "5.6.7"), True
    if env.eight_bit and not session.supports("8bitmime") and not utf8:
        return every("bounced", "554 5.6.3 the message has 8-bit content and the receiving server "
                     "does not support 8BITMIME (no conversion is done)", "5.6.3"), True
    mail = _mail_command(env, session)
    rcpts = [_rcpt_command(env, r, session) for r in env.recipients]
    piped = session.pipelining
    timeout = settings.command_timeout
    # Final answers so far, by recipient: kept if the session is lost afterwards (a refusal stays a
    # refusal). An accepted recipient gets its entry only from the reply to the message's end.
    results: dict[int, RcptResult] = {}
    try:
        session.write(mail + b"".join(rcpts) + b"DATA\r\n" if piped else mail)
        try:
            code, text = await session.reply(timeout)
        except SessionLost:
            if reused:
                raise _Stale() from None
            raise
        if code == 421 and reused:
            raise _Stale()
        if code != 250:
            outcome, status = _judged(code, text, ())  # a 2xx other than 250 too: no transaction started
            results = {r.id: RcptResult(r.id, outcome, _reply(code, text), status, mta) for r in env.recipients}
            if piped:  # the RCPT and DATA replies still come (refusals): read them, end any DATA
                await _skip_replies(session, len(rcpts), timeout)
            return list(results.values()), code != 421
        accepted: list[Recipient] = []
        for r, line in zip(env.recipients, rcpts, strict=True):
            if not piped:
                session.write(line)
            code, text = await session.reply(timeout)
            if code in (250, 251):
                accepted.append(r)
            else:
                outcome, status = _judged(code, text, ())
                results[r.id] = RcptResult(r.id, outcome, _reply(code, text), status, mta)
        if not accepted:
            if piped:
                await _skip_replies(session, 0, timeout)
            session.write(b"RSET\r\n")
            await session.reply(timeout)
            return [results[r.id] for r in env.recipients], True
        if not piped:
            session.write(b"DATA\r\n")
        code, text = await session.reply(timeout)
        clean = code == 354
        if code == 354:
            session.write(dot_stuffed(env.message))
            await session.drain(settings.data_timeout)
            code, text = await session.reply(settings.data_timeout)
            outcome, status = _judged(code, text, range(200, 300))
        else:
            # Whatever DATA got instead of 354 (a 250 included), the message was not sent: never delivered.
            outcome, status = _judged(code, text, ())
        for r in accepted:
            results[r.id] = RcptResult(r.id, outcome, _reply(code, text), status, mta)
        # A refused DATA leaves the server's transaction open: that session is not used again.
        return [results[r.id] for r in env.recipients], clean
    except SessionLost as exc:
        # Lost mid-transaction: what was refused stays refused; nothing was accepted for sure, so every
        # other recipient is retried. A crash of the peer between its 250 and our reading it is the
        # at-least-once duplicate window.
        reply = f"451 4.4.2 connection lost during the transaction ({exc.reason})"
        return [results.get(r.id) or RcptResult(r.id, "deferred", reply, "4.4.2", mta)
                for r in env.recipients], False


async def _skip_replies(session: Session, rcpts: int, seconds: float) -> None:
    """Read the replies to `rcpts` pipelined RCPTs and to DATA; should DATA have been accepted anyway
    (RFC 2920 §3.1 says a server must refuse it then), send an empty message to end it."""
    for _ in range(rcpts):
        await session.reply(seconds)
    code, _ = await session.reply(seconds)
    if code == 354:
        session.write(b".\r\n")
        await session.reply(seconds)
