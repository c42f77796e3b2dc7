"""One SMTP connection: the command loop, per-connection state and every command (RFC 5321, 3030, 3207,
3461, 4954, 6152, 6531, 1870, 2920).

Built on aiosmtpd's `SMTP` protocol for its transport handling (the STARTTLS transport swap that discards
plaintext read before the handshake, CVE-2024-34083 class), but with our own command loop so that every
reply is a named `mailcore.replies` constant, DATA is read in large chunks (`smtp_in.dataread`), BDAT and
DSN exist, and an exception becomes `451 4.3.0` with the cause logged, never sent (the one place errors
become replies: `_dispatch`). Per-connection state (peer, TLS, login, error count) is on the session;
per-transaction state is the `Transaction`. Store access goes through `smtp_in.checks` and
`smtp_in.transaction`.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.smtp import SMTP

from config.settings import SMTPSettings
from mailcore import replies
from mailcore.connections import ConnectionSlots
from mailcore.dns import DNSLookup
from mailcore.proxygate import ClientAddress
from mailcore.received import clean, new_queue_id
from mailcore.replies import Reply
from smtp_in import checks, clientname
from smtp_in.auth import MECHANISMS, Authenticator, SASLError, decode_b64, decode_plain, decode_text
from smtp_in.checks import BodyCheck
from smtp_in.dataread import ChunkReader, DataReader, Verdict
from smtp_in.hooks import ListenerHooks
from smtp_in.params import ParamError, decimal, parse_mail, parse_rcpt
from smtp_in.senderauth import SenderAuthentication
from smtp_in.spool import Spool
from smtp_in.transaction import Origin, Recipient, Transaction, deliver
from storage.db import is_unavailable
from storage.routecache import RouteCache

log = logging.getLogger("smtp_in")

READ_CHUNK = 64 * 1024
# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with CRLF. Extensions lengthen MAIL and RCPT
# (RFC 1870, RFC 3461 §5: ORCPT alone may be 500) and AUTH (RFC 4954 §4: 12288).
COMMAND_LINE_LIMIT = 512
LINE_LIMITS = {"MAIL": 2048, "RCPT": 2048, "AUTH": 12288}
MAX_LINE_READ = max(LINE_LIMITS.values())
# Uses of one command per connection before 421 (per-command call limits). Senders that reuse a
# connection (Postfix's smtp client, the bench) send RSET before every transaction, so RSET, MAIL and
# DATA allow as many transactions per connection as MAX_TRANSACTIONS; NOOP and the others stay low.
MAX_TRANSACTIONS = 10000
CALL_LIMITS = {"HELO": 20, "EHLO": 20, "NOOP": 50, "RSET": MAX_TRANSACTIONS, "VRFY": 20, "EXPN": 20,
               "HELP": 20, "AUTH": 10, "STARTTLS": 2, "MAIL": MAX_TRANSACTIONS, "RCPT": 20 * MAX_TRANSACTIONS,
               "DATA": MAX_TRANSACTIONS, "BDAT": 100 * MAX_TRANSACTIONS}
# RFC 2920 §3.1: these must end a pipelined group, so nothing may be waiting behind them.
SYNC_VERBS = {"EHLO", "HELO", "DATA"}
COMMANDS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
            "HELP", "STARTTLS", "AUTH"}

_VERDICT_REPLIES = {
    Verdict.TOO_BIG: replies.MESSAGE_TOO_BIG,
    Verdict.LINE_TOO_LONG: replies.MESSAGE_LINE_TOO_LONG,
    Verdict.BARE_CR_LF: replies.BARE_CR_OR_LF,
    Verdict.NUL: replies.NUL_IN_MESSAGE,
}


@dataclass
class ListenerContext:
    """What every session of one listener shares. Built by `smtp_in.server.SMTPService`."""

    name: str  # "mx", "submission", "submissions"
    submission: bool
    implicit_tls: bool
    hostname: str
    postmaster: str
    settings: SMTPSettings
    pool: asyncpg.Pool
    starttls_context: ssl.SSLContext | None
    limits: ConnectionSlots
    authenticator: Authenticator
    spool_dir: Path | None = None
    body_checks: list[BodyCheck] = field(default_factory=list)
    sender_auth: SenderAuthentication | None = None  # MX only; also among body_checks
    routes: RouteCache | None = None  # the process's routing cache; None: every RCPT asks the store
    resolver: DNSLookup | None = None  # for the client's name in Received (smtp_in.clientname); None: none
    hooks: ListenerHooks = field(default_factory=lambda: ListenerHooks("smtp"))  # shared limits, metrics
    sessions: set[SMTPSession] = field(default_factory=set)
    closing: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # set when closing and no session is left


class _Close(Exception):
    """End the connection now (after any reply already sent)."""


class _LineTooLong(Exception):
    pass


class SMTPSession(SMTP):
    """The protocol instance for one client connection."""

    # The StreamReader's buffer limit (aiosmtpd uses it for flow control only with our loop).
    line_length_limit = 2 * READ_CHUNK

    def __init__(self, ctx: ListenerContext, client: ClientAddress | None = None) -> None:
        super().__init__(
            object(), hostname=ctx.hostname, ident="ESMTP", tls_context=ctx.starttls_context,
            timeout=ctx.settings.idle_timeout, enable_SMTPUTF8=True,
            data_size_limit=ctx.settings.max_message_size, loop=asyncio.get_running_loop(),
        )
        self.ctx = ctx
        self.client = client  # from the PROXY gate: the real client, maybe behind a balancer
        self.peer_ip = client.ip if client else ""
        self.helo: str | None = None
        self.esmtp = False
        self.tx = Transaction()
        self.account: Any = None  # storage.accounts.Account once authenticated
        self._inbuf = bytearray()
        self._out = bytearray()  # replies not yet written (see `_flush`)
        self._timer_wait = 0.0  # the duration the idle timer was last armed for (`_reset_timeout`)
        self._errors = 0
        self._calls: Counter[str] = Counter()
        self._admitted = False
        self._refusal: Reply | None = None
        self._busy = False
        self._bdat: tuple[Spool, ChunkReader] | None = None
        self._name: asyncio.Task[str | None] | None = None  # the client's confirmed name, being looked up

    # --- transport events ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            if self.client is None:
                peer = transport.get_extra_info("peername")
                self.client = ClientAddress(str(peer[0]), int(peer[1])) if peer else ClientAddress("", 0)
            self.peer_ip = self.client.ip
            self.ctx.sessions.add(self)
            self._admitted = self.ctx.limits.acquire(self.peer_ip)
            self._refusal = None if self._admitted else replies.TOO_MANY_CONNECTIONS
            if self._admitted:
                self._name = clientname.lookup(self.ctx.resolver, self.peer_ip)
        else:  # TLS is up after STARTTLS: RFC 3207 §4.2, forget everything said before
            self._inbuf.clear()
            self._reset_state()

    def connection_lost(self, error: Exception | None) -> None:
        self._leave()
        self._drop_bdat()
        super().connection_lost(error)

    def _leave(self) -> None:
        """Give back the connection slot and leave the listener's sessions; safe to call twice.

        Called by `connection_lost` and when the command loop ends: after a STARTTLS whose handshake
        never completes (garbage, a close, a timeout), asyncio's SSLProtocol does not pass
        connection_lost on to us, since to it we were never connected; without the second call each
        such connection kept its slot for ever and `max_connections_per_ip` of them locked the
        address out (`max_connections`: everyone)."""
        if self._admitted:
            self.ctx.limits.release(self.peer_ip)
            self._admitted = False
        if self._name is not None and not self._busy:  # a message being stored may still want it
            self._name.cancel()
        self.ctx.sessions.discard(self)
        self.tx.discard()
        if self.ctx.closing and not self.ctx.sessions:
            self.ctx.drained.set()

    def eof_received(self) -> bool | None:
        # Let the command loop see EOF and finish what it is doing (aiosmtpd would cancel it mid-commit).
        self._reader.feed_eof()
        return not self.tls_active

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Restart the idle timer, as aiosmtpd does after every command, but without replacing a timer
        armed for the same duration within the last hundredth of it (at most 1 s): a pipelined
        transaction resets it five times in a millisecond, and each replacement is a cancelled
        handle and a new one in the loop's heap. The timeout then fires that much early at most."""
        wait = duration or self._timeout_duration
        handle = self._timeout_handle
        if handle is not None and self._timer_wait == wait and not handle.cancelled():
            if handle.when() - self.loop.time() > wait - min(1.0, wait / 100):
                return
        self._timer_wait = wait
        super()._reset_timeout(wait)

    def _timeout_cb(self) -> None:
        log.info("smtp idle timeout", extra={"listener": self.ctx.name, "peer": self.peer_ip})
        if self.transport is not None and not self.transport.is_closing():
            self._write_reply(replies.IDLE_TIMEOUT)
            self.transport.close()

    @property
    def tls_active(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    def _new_transaction(self) -> None:
        """Forget the current transaction (and stop its sender checks) and start an empty one."""
        self.tx.discard()
        self.tx = Transaction()

    def _reset_state(self) -> None:
        self.helo = None
        self.esmtp = False
        self._new_transaction()
        self.account = None
        self._drop_bdat()

    def shutdown(self) -> None:
        """The service is stopping: an idle session says 421 and closes; a busy one finishes first."""
        if not self._busy and self.transport is not None and not self.transport.is_closing():
            self._write_reply(replies.SERVICE_UNAVAILABLE)
            self.transport.close()

    # --- output --------------------------------------------------------------------------------------

    # RFC 2920 §3.1: replies to a pipelined group may be held back while more of its commands are
    # already read, and must be sent before the server waits for input. `_reply` queues a reply in
    # `_out`; `_flush` sends what is queued, in one write, and is called before every read from the
    # socket that could wait (`_read_line`, `_read_some`) and by `_send_raw`. A sender's
    # `RSET MAIL RCPT DATA` group thus costs one write (and one wake-up of the peer) instead of four.

    def _write_reply(self, reply: Reply) -> None:
        """Write a reply at once, after anything still queued (outside the command loop: timeouts)."""
        self._queue(reply.lines())
        self._writer.write(bytes(self._out))
        self._out.clear()

    async def _reply(self, reply: Reply) -> None:
        self.ctx.hooks.replied(reply)
        self._queue(reply.lines())
        if reply.code >= 500:
            self._errors += 1
            if self._errors >= self.ctx.settings.max_bad_commands:
                log.info("smtp too many errors", extra={"listener": self.ctx.name, "peer": self.peer_ip})
                await self._send_raw(replies.TOO_MANY_ERRORS.lines())
                raise _Close

    def _queue(self, lines: list[str]) -> None:
        """Queue reply lines to go out with the next flush (no metrics, no error count)."""
        self._out += "".join(line + "\r\n" for line in lines).encode("utf-8")

    async def _send_raw(self, lines: list[str]) -> None:
        """Queue these lines and send everything queued now (greeting, challenges, closing)."""
        self._queue(lines)
        await self._flush()

    async def _flush(self) -> None:
        """Send the queued replies in one write; wait while the transport's buffer is full."""
        if self._out:
            self._writer.write(bytes(self._out))
            self._out.clear()
            await self._writer.drain()

    # --- input ---------------------------------------------------------------------------------------

    async def _read_line(self, limit: int) -> bytes | None:
        """One line up to LF (None at EOF). Raise _LineTooLong (after skipping it) if over `limit`."""
        too_long = False
        while True:
            i = self._inbuf.find(b"\n")
            if i >= 0:
                line = bytes(self._inbuf[: i + 1])
                del self._inbuf[: i + 1]
                if too_long or len(line) > limit:
                    raise _LineTooLong
                return line
            if len(self._inbuf) > limit:
                too_long = True
                self._inbuf.clear()
            await self._flush()
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return None
            self._inbuf += data

    async def _read_some(self, idle: float) -> bytes:
        """Content bytes: what is buffered, else the next chunk from the socket. Empty means EOF."""
        if self._inbuf:
            data = bytes(self._inbuf)
            self._inbuf.clear()
            return data
        await self._flush()
        self._reset_timeout(idle)
        return await self._reader.read(READ_CHUNK)

    # --- the command loop ----------------------------------------------------------------------------

    async def _handle_client(self) -> None:
        try:
            if self._refusal is None:
                self._refusal = await self.ctx.hooks.connected(self.peer_ip)
            if self._refusal is not None:
                log.info("smtp connection refused", extra={"listener": self.ctx.name, "peer": self.peer_ip})
                await self._send_raw(self._refusal.lines())
                return
            if self.ctx.closing:
                await self._send_raw(replies.SERVICE_UNAVAILABLE.lines())
                return
            await self._send_raw([f"220 {self.ctx.hostname} ESMTP ready"])
            while self.transport is not None and not self.transport.is_closing():
                try:
                    line = await self._read_line(MAX_LINE_READ)
                except _LineTooLong:
                    await self._reply(replies.LINE_TOO_LONG)
                    continue
                if line is None:
                    break
                self._busy = True
                self._reset_timeout()
                await self._dispatch(line)
                self._busy = False
                if self.ctx.closing:
                    await self._send_raw(replies.SERVICE_UNAVAILABLE.lines())
                    break
        except _Close:
            pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            log.debug("smtp connection lost", extra={"listener": self.ctx.name, "peer": self.peer_ip})
        finally:
            self._busy = False
            self._drop_bdat()
            if self.transport is not None:
                if self._out and not self.transport.is_closing():  # replies queued before EOF
                    self.transport.write(bytes(self._out))
                self._out.clear()
                self.transport.close()
            self._leave()

    async def _dispatch(self, line: bytes) -> None:
        """Parse one command line, enforce the generic limits, run the command. Errors become replies here."""
        body = line.rstrip(b"\n").removesuffix(b"\r")
        verb_b, _, _ = body.partition(b" ")
        verb = verb_b.decode("ascii", "replace").upper()
        if len(line) > LINE_LIMITS.get(verb, COMMAND_LINE_LIMIT):
            await self._reply(replies.LINE_TOO_LONG)
            return
        if b"\r" in body or b"\0" in body:
            await self._reply(replies.SYNTAX_ERROR)
            return
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            await self._reply(replies.SYNTAX_ERROR.with_text("invalid UTF-8 in command"))
            return
        arg = text[len(verb_b):].strip(" ")
        if verb not in COMMANDS:
            await self._reply(replies.COMMAND_UNRECOGNIZED)
            return
        self._calls[verb] += 1
        if self._calls[verb] > CALL_LIMITS.get(verb, 1000):
            log.info("smtp call limit", extra={"listener": self.ctx.name, "peer": self.peer_ip, "verb": verb})
            await self._send_raw(replies.TOO_MANY_COMMANDS.lines())
            raise _Close
        if self._inbuf and verb != "STARTTLS" and (verb in SYNC_VERBS or not self.esmtp):
            log.info("smtp pipelining violation", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                          "verb": verb})
            await self._send_raw(replies.PIPELINING_VIOLATION.lines())
            raise _Close
        handler: Callable[[str], Any] = getattr(self, "smtp_" + verb)
        try:
            await handler(arg)
        except (_Close, asyncio.CancelledError, ssl.SSLError):
            raise
        except Exception as exc:
            if isinstance(exc, ConnectionError) and self._client_gone():
                raise
            if is_unavailable(exc):  # the database went away: 451, the sender retries
                log.warning("smtp store unavailable", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                             "verb": verb, "error": repr(exc)})
            else:
                log.exception("smtp command failed", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                            "verb": verb})
            self._new_transaction()
            self._drop_bdat()
            await self._reply(replies.TEMPORARY_FAILURE)

    # --- commands ------------------------------------------------------------------------------------

    async def smtp_HELO(self, arg: str) -> None:
        await self._greet(arg, esmtp=False)

    async def smtp_EHLO(self, arg: str) -> None:
        await self._greet(arg, esmtp=True)

    async def _greet(self, arg: str, esmtp: bool) -> None:
        name = arg.split(" ")[0] if arg else ""
        if not name:
            await self._reply(replies.SYNTAX_ERROR.with_text("hostname required"))
            return
        self.helo = clean(name)
        self.esmtp = esmtp
        self._new_transaction()
        self._drop_bdat()
        if not esmtp:
            await self._send_raw([f"250 {self.ctx.hostname}"])
            return
        lines = [self.ctx.hostname, "PIPELINING", f"SIZE {self.ctx.settings.max_message_size}", "8BITMIME",
                 "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
        if self.ctx.starttls_context is not None and not self.tls_active:
            lines.append("STARTTLS")
        if self._auth_offered():
            lines.append("AUTH " + " ".join(MECHANISMS))
        await self._send_raw([f"250{'-' if i < len(lines) - 1 else ' '}{x}" for i, x in enumerate(lines)])

    def _auth_offered(self) -> bool:
        if not self.ctx.submission:
            return False
        return self.tls_active or (self.ctx.settings.allow_plaintext_auth and self._peer_is_loopback())

    def _peer_is_loopback(self) -> bool:
        """A direct loopback client; never one behind a balancer (its PROXY source may be 127.0.0.1)."""
        return self.client is not None and self.client.trusted_loopback

    async def smtp_NOOP(self, arg: str) -> None:
        await self._reply(replies.NOOP_OK)

    async def smtp_HELP(self, arg: str) -> None:
        await self._reply(replies.HELP)

    async def smtp_VRFY(self, arg: str) -> None:
        # RFC 5321 §3.5.3: 252 without saying whether the user exists.
        await self._reply(replies.CANNOT_VRFY if arg else replies.SYNTAX_ERROR)

    async def smtp_EXPN(self, arg: str) -> None:
        await self._reply(replies.COMMAND_NOT_IMPLEMENTED)

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self._reply(replies.SYNTAX_ERROR)
            return
        self._new_transaction()
        self._drop_bdat()
        await self._reply(replies.RESET)

    async def smtp_QUIT(self, arg: str) -> None:
        await self._send_raw(replies.BYE.lines())
        raise _Close

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            await self._reply(replies.SYNTAX_ERROR)
            return
        if self.tls_active:
            await self._reply(replies.ALREADY_TLS)
            return
        if self.ctx.starttls_context is None:
            await self._reply(replies.TLS_UNAVAILABLE)
            return
        if self._inbuf:  # commands pipelined behind STARTTLS were sent in plaintext: never act on them
            log.warning("smtp plaintext after STARTTLS discarded", extra={
                "listener": self.ctx.name, "peer": self.peer_ip, "octets": len(self._inbuf)})
            self._inbuf.clear()
        await self._send_raw(replies.READY_FOR_TLS.lines())
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, self.ctx.starttls_context, waiter,
                                                  server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            log.info("smtp TLS handshake failed", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                         "error": type(exc).__name__})
            raise _Close from None
        self._reset_state()

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.ctx.submission:
            await self._reply(replies.AUTH_NOT_AVAILABLE)
            return
        if not self.esmtp:
            await self._reply(replies.HELO_FIRST.with_text("send EHLO first"))
            return
        if not self._auth_offered():
            await self._reply(replies.TLS_REQUIRED)
            return
        if self.account is not None:
            await self._reply(replies.ALREADY_AUTHENTICATED)
            return
        if self.tx.started:
            await self._reply(replies.BAD_SEQUENCE.with_text("AUTH not allowed during a mail transaction"))
            return
        parts = arg.split(" ")
        mechanism = parts[0].upper() if parts and parts[0] else ""
        if mechanism not in MECHANISMS or len(parts) > 2:
            await self._reply(replies.AUTH_MECHANISM_UNKNOWN)
            return
        if await self.ctx.authenticator.locked(self.peer_ip):
            await self._reply(replies.AUTH_TEMPORARILY_LOCKED)
            return
        initial = parts[1].encode() if len(parts) == 2 else None
        try:
            if mechanism == "PLAIN":
                data = decode_b64(initial) if initial is not None else await self._challenge(b"")
                login, password = decode_plain(data)
            else:
                user = decode_b64(initial) if initial is not None else await self._challenge(b"Username:")
                login = decode_text(user)
                password = decode_text(await self._challenge(b"Password:"))
        except SASLError as exc:
            await self._reply(exc.reply)
            return
        result = await self.ctx.authenticator.verify(self.peer_ip, login, password)
        if isinstance(result, Reply):
            await self._reply(result)
            return
        self.account = result
        log.info("smtp authenticated", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                              "account": result.address})
        await self._reply(replies.AUTH_OK)

    async def _challenge(self, prompt: bytes) -> bytes:
        import base64

        await self._send_raw(["334 " + base64.b64encode(prompt).decode()])
        try:
            line = await self._read_line(LINE_LIMITS["AUTH"])
        except _LineTooLong:
            raise SASLError(replies.LINE_TOO_LONG) from None
        if line is None:
            raise _Close
        return decode_b64(line)

    async def smtp_MAIL(self, arg: str) -> None:
        if self.helo is None:
            await self._reply(replies.HELO_FIRST)
            return
        if self.ctx.submission and self.account is None:
            await self._reply(replies.AUTH_REQUIRED)
            return
        if self.tx.started:
            await self._reply(replies.NESTED_MAIL)
            return
        try:
            args = parse_mail(arg, esmtp=self.esmtp, utf8_allowed=True)
        except ParamError as exc:
            await self._reply(exc.reply)
            return
        if args.size is not None and args.size > self.ctx.settings.max_message_size:
            await self._reply(replies.MESSAGE_TOO_BIG)
            return
        refusal = (await checks.check_sender(self.ctx.pool, self.account, args.sender)
                   or await self.ctx.hooks.mail(self.account))
        if refusal is not None:
            await self._reply(refusal)
            return
        self.tx = Transaction(sender=args.sender, started=True, smtputf8=args.smtputf8, body=args.body,
                              size_hint=args.size, ret=args.ret, envid=args.envid)
        if self.ctx.sender_auth is not None:  # MX only: SPF runs while RCPT and DATA arrive
            self.tx.sender_check = self.ctx.sender_auth.start_spf(self.peer_ip, self.helo,
                                                                  str(args.sender or ""))
        await self._reply(replies.SENDER_OK)

    async def smtp_RCPT(self, arg: str) -> None:
        if not self.tx.started:
            await self._reply(replies.NEED_MAIL)
            return
        if self.tx.rcpt_count >= self.ctx.settings.max_recipients:
            await self._reply(replies.TOO_MANY_RECIPIENTS)
            return
        try:
            args = parse_rcpt(arg, esmtp=self.esmtp, smtputf8=self.tx.smtputf8)
        except ParamError as exc:
            await self._reply(exc.reply)
            return
        route = await checks.route_recipient(self.ctx.pool, args.address, authenticated=self.account is not None,
                                             postmaster=self.ctx.postmaster, size_hint=self.tx.size_hint,
                                             cache=self.ctx.routes)
        if isinstance(route, Reply):
            await self._reply(route)
            return
        shown = str(args.address) if args.address else "postmaster"
        self.tx.recipients.append(Recipient(shown, route.local, route.remote, args.notify, args.orcpt,
                                            route.unlimited))
        self.tx.rcpt_count += 1
        await self._reply(replies.RECIPIENT_OK)

    async def smtp_DATA(self, arg: str) -> None:
        if arg:
            await self._reply(replies.SYNTAX_ERROR)
            return
        if not self.tx.started:
            await self._reply(replies.NEED_MAIL)
            return
        if not self.tx.recipients:
            await self._reply(replies.NO_VALID_RECIPIENTS)
            return
        if self.tx.bdat:
            await self._reply(replies.MIXED_DATA_BDAT)
            return
        self._queue(replies.START_DATA.lines())  # sent with the group's other replies by `_read_some`
        spool = Spool(self.ctx.settings.spool_threshold, self.ctx.spool_dir)
        try:
            reader = DataReader(spool, self.ctx.settings.max_message_size)
            while True:
                data = await self._read_some(self.ctx.settings.data_timeout)
                if not data:
                    raise _Close  # EOF inside DATA: nothing was accepted
                if reader.feed(data):
                    break
            self._inbuf[0:0] = reader.rest  # commands pipelined after the end of data
            self._reset_timeout()
            if reader.verdict is not Verdict.OK:
                self._log_refused(reader.verdict, reader.size)
                self._new_transaction()
                await self._reply(_VERDICT_REPLIES[reader.verdict])
                return
            await self._finish(spool)
        finally:
            spool.close()

    async def smtp_BDAT(self, arg: str) -> None:
        parts = arg.split(" ")
        last = len(parts) == 2 and parts[1].upper() == "LAST"
        size = decimal(parts[0], 12)
        if size is None or (len(parts) == 2 and not last) or len(parts) > 2:
            # Without a size we cannot tell data from commands: stop here rather than guess.
            await self._send_raw(replies.SYNTAX_ERROR.lines())
            raise _Close
        refusal: Reply | None = None
        if not self.tx.started:
            refusal = replies.NEED_MAIL
        elif not self.tx.recipients:
            refusal = replies.NO_VALID_RECIPIENTS
        elif self._bdat is None:
            spool = Spool(self.ctx.settings.spool_threshold, self.ctx.spool_dir)
            self._bdat = (spool, ChunkReader(spool, self.ctx.settings.max_message_size))
            self.tx.bdat = True
        reader = self._bdat[1] if refusal is None and self._bdat else None
        if reader is not None and reader.size + size > self.ctx.settings.max_message_size:
            refusal, reader = replies.MESSAGE_TOO_BIG, None
        remaining = size
        while remaining:  # always consume the chunk, accepted or not, to stay in step
            data = await self._read_some(self.ctx.settings.data_timeout)
            if not data:
                raise _Close
            if len(data) > remaining:
                self._inbuf[0:0] = data[remaining:]
                data = data[:remaining]
            remaining -= len(data)
            if reader is not None:
                reader.feed(data)
        self._reset_timeout()
        if refusal is not None:
            if refusal is replies.MESSAGE_TOO_BIG:
                self._new_transaction()
                self._drop_bdat()
            await self._reply(refusal)
            return
        assert self._bdat is not None and reader is not None
        if not last:
            await self._reply(replies.CHUNK_RECEIVED.with_text(f"{size} octets received"))
            return
        spool, _ = self._bdat
        self._bdat = None
        try:
            verdict = reader.finish()
            if verdict is not Verdict.OK:
                self._log_refused(verdict, reader.size)
                self._new_transaction()
                await self._reply(_VERDICT_REPLIES[verdict])
                return
            await self._finish(spool)
        finally:
            spool.close()

    def _client_gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _drop_bdat(self) -> None:
        if self._bdat is not None:
            self._bdat[0].close()
            self._bdat = None

    def _log_refused(self, verdict: Verdict, size: int) -> None:
        log.info("smtp message refused", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                "reason": verdict.value, "size": size})

    async def _client_name(self) -> str | None:
        """The client's confirmed name when its look-up (bounded by clientname.TIMEOUT) has an answer."""
        task = self._name
        if task is None or task.cancelled():
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the connection ended meanwhile: no name, the message goes on
                return None
            raise

    async def _finish(self, spool: Spool) -> None:
        """Store the received message; 250 only once the transaction has committed."""
        tx, self.tx = self.tx, Transaction()
        queue_id = new_queue_id()
        ssl_obj = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        origin = Origin(
            listener=self.ctx.name, submission=self.ctx.submission, peer_ip=self.peer_ip,
            helo=self.helo or "", esmtp=self.esmtp, hostname=self.ctx.hostname,
            tls_version=ssl_obj.version() if ssl_obj else None,
            tls_cipher=ssl_obj.cipher()[0] if ssl_obj and ssl_obj.cipher() else None,
            account_id=self.account.id if self.account else None,
            login=self.account.address if self.account else None, peer_name=await self._client_name(),
        )
        started = time.perf_counter()
        try:
            result = await deliver(self.ctx.pool, tx, origin, spool, queue_id, self.ctx.body_checks)
        finally:
            tx.discard()
        if isinstance(result, Reply):
            log.info("smtp message refused by check", extra={"listener": self.ctx.name, "peer": self.peer_ip,
                                                             "queue_id": queue_id, "reply": str(result)})
            await self._reply(result)
            return
        log.info("smtp message accepted", extra={
            "listener": self.ctx.name, "peer": self.peer_ip, "queue_id": queue_id,
            "message_row": result.message_id, "local": len(result.entries),
            "queued": result.queue_id is not None, "sender": str(tx.sender or "")})
        self.ctx.hooks.accepted(result, time.perf_counter() - started)
        await self._reply(replies.MESSAGE_ACCEPTED.with_text(f"message accepted as {queue_id}"))
