"""One IMAP connection's state machine over the store: bytes in, responses out through a transport.

Owns the session state (NOT AUTHENTICATED / AUTHENTICATED / SELECTED / LOGOUT), feeding the sans-IO
parser and acting on its events (continuations, AUTHENTICATE exchanges, IDLE), the state check before
every command (through `imap.dispatch`), the one place where errors become replies (a handler's
`Refusal`, a store error, or anything unexpected: logged, and the client gets a generic NO), the
untagged mailbox updates sent at the points RFC 3501 §7.4.1 allows, and the limits on bad input.
Must not: touch sockets (the `Transport` does: `imap.server` for real, a fake in tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from config.settings import Settings
from imap import encoder, replies
from imap.commands import (
    AuthResponse,
    BadCommand,
    Command,
    ContinuationNeeded,
    Event,
    Hangup,
    IdleDone,
)
from imap.dispatch import COMMANDS, State
from imap.parser import CommandParser
from imap.replies import Abort, Refusal, Reply
from imap.selected import SelectedMailbox
from mailcore.limits import AuthGuard, build_limits
from mailcore.metrics import Metrics
from storage import mailstore
from storage.db import is_unavailable
from storage.notify import MailboxNotifier, Subscription
from storage.snapshots import SnapshotCache

log = logging.getLogger(__name__)

BASE_CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
                     "MOVE", "SPECIAL-USE", "CHILDREN", "UNSELECT", "QUOTA", "QUOTA=RES-STORAGE")
MAX_BAD_BEFORE_AUTH = 5  # BAD replies (and failed logins) before an unauthenticated client is dropped
PREAUTH_LITERAL = 8 * 1024  # literals before login: enough for a user name and password
PREAUTH_COMMAND = 4 * PREAUTH_LITERAL  # a whole command with its literals, before login
AUTHENTICATED_LITERAL = 1024 * 1024  # literals other than APPEND's once logged in
# Commands during which EXPUNGE must not be sent (RFC 3501 §7.4.1); their UID forms may.
IDLE_RETRY = 1.0  # seconds between looks at the store while it is unavailable during IDLE
_NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH"})
# Commands after which the store is asked for mailbox changes only when a notification said there may be
# some: they change nothing another session must see (a FETCH's own \Seen is in `own_modseqs`), and a
# client polls with NOOP (always asked). Saves a query per FETCH: Thunderbird fetches one body at a time.
# SELECT and EXAMINE subscribe before they read the mailbox, so a change they did not see is notified.
_SYNC_ON_NOTIFY = frozenset({"FETCH", "SEARCH", "SELECT", "EXAMINE"})


class Transport(Protocol):
    """The connection as the session sees it."""

    peer_ip: str
    secure: bool

    def write(self, data: bytes | memoryview) -> None: ...

    async def drain(self) -> None: ...

    async def start_tls(self) -> None: ...

    def close(self) -> None: ...


class ConnectionLimiter:
    """Counts sessions per (account, client address); shared by every session of a server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[tuple[int, str], int] = {}

    def acquire(self, account_id: int, ip: str) -> Callable[[], None] | None:
        """Take a slot; returns its release function, or None when the limit is reached."""
        key = (account_id, ip)
        if self._counts.get(key, 0) >= self.limit:
            return None
        self._counts[key] = self._counts.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._counts[key] -= 1
                if not self._counts[key]:
                    del self._counts[key]

        return release


@dataclass
class ServerContext:
    """What every session of one server shares."""

    settings: Settings
    pool: asyncpg.Pool
    notifier: MailboxNotifier | None
    tls: ssl.SSLContext | None
    # The process's failed-login counts (shared with SMTP AUTH and the HTTP API) and metrics; without
    # them (the protocol tested alone), in-process limits from the settings and a private registry.
    auth: AuthGuard | None = None
    metrics: Metrics | None = None
    limiter: ConnectionLimiter = field(init=False)
    # SELECT's snapshots, kept for the next SELECT of the same mailbox in this process
    snapshots: SnapshotCache = field(default_factory=SnapshotCache)

    def __post_init__(self) -> None:
        self.limiter = ConnectionLimiter(self.settings.imap.max_connections_per_user)
        if self.metrics is None:
            self.metrics = Metrics()
        if self.auth is None:
            self.auth = AuthGuard(build_limits(self.settings, self.metrics), self.metrics)

    @property
    def guard(self) -> AuthGuard:
        assert self.auth is not None
        return self.auth

    @property
    def stats(self) -> Metrics:
        assert self.metrics is not None
        return self.metrics


@dataclass
class Account:
    id: int
    address: str


class Session:
    """Feed it the client's bytes with `feed`; it writes responses to the transport."""

    def __init__(self, ctx: ServerContext, transport: Transport) -> None:
        self.ctx = ctx
        self.transport = transport
        self.state = State.NOT_AUTHENTICATED
        self.account: Account | None = None
        self.selected: SelectedMailbox | None = None
        self.append_boxes: dict[str, mailstore.Mailbox] = {}  # APPEND's mailboxes by name (imap.handlers.authenticated)
        # keywords known to be in each mailbox (by id): STORE, APPEND and COPY ask the store to count a
        # mailbox's keywords (mailstore.MAX_KEYWORDS) only for keywords not in here
        self.known_keywords: dict[int, set[str]] = {}
        self.subscription: Subscription | None = None
        self.parser = self._new_parser()
        self.bad_count = 0
        self.closed = False
        self.idle_tag: str | None = None
        self.client_id: dict[str, str | None] | None = None
        self._pending: deque[Event] = deque()
        self._auth_tag: str | None = None
        self._release_slot: Callable[[], None] | None = None
        self._counted = False  # in the open-sessions gauge

    # --- capabilities and policy
    @property
    def client_gone(self) -> bool:
        """The client's connection is closing (so a ConnectionError is its, not the database's)."""
        closing = getattr(self.transport, "is_closing", None)
        return bool(closing()) if closing is not None else False

    @property
    def proxied(self) -> bool:
        """The client came through a trusted load balancer (its PROXY header named it)."""
        return bool(getattr(self.transport, "proxied", False))

    @property
    def tls_available(self) -> bool:
        return self.ctx.tls is not None and not self.transport.secure

    @property
    def auth_allowed(self) -> bool:
        """LOGIN/AUTHENTICATE only over TLS, or in plain text from loopback when configured (dev)."""
        if self.transport.secure:
            return True
        if not self.ctx.settings.imap.allow_plaintext_auth or self.proxied:
            return False  # loopback trust is for direct connections only, never through a balancer
        try:
            return ipaddress.ip_address(self.transport.peer_ip).is_loopback
        except ValueError:
            return False

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_available:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.auth_allowed else "LOGINDISABLED")
        else:
            # RFC 7889: the largest APPEND literal, so a client sends no message it would lose the
            # connection over (a far larger non-synchronising literal ends it: imap.parser)
            caps.append(f"APPENDLIMIT={self.ctx.settings.smtp.max_message_size}")
        return caps

    def _new_parser(self) -> CommandParser:
        return CommandParser(max_line=self.ctx.settings.imap.max_line_length, max_literal=PREAUTH_LITERAL,
                             max_append_literal=PREAUTH_LITERAL, max_command=PREAUTH_COMMAND)

    # --- output
    def send(self, data: bytes | memoryview) -> None:
        self.transport.write(data)

    async def greet(self) -> None:
        self.ctx.stats.imap_sessions.inc()
        self._counted = True
        self.send(encoder.ok("*", f"{self.ctx.settings.server.hostname} IMAP4rev1 ready",
                             encoder.Code.capability(self.capabilities())))
        await self.transport.drain()

    # --- input
    async def feed(self, data: bytes) -> None:
        """Process received bytes: every complete command is answered before this returns."""
        self._pending.extend(self.parser.feed(data))
        await self._drain_events()

    async def _drain_events(self) -> None:
        while self._pending and not self.closed:
            event = self._pending.popleft()
            await self._event(event)
            await self.transport.drain()

    async def _event(self, event: Event) -> None:
        if isinstance(event, ContinuationNeeded):
            self.send(encoder.continuation("Ready for literal data"))
        elif isinstance(event, BadCommand):
            await self._bad(event.tag, Reply("BAD", event.text, encoder.Code(event.code) if event.code else None))
        elif isinstance(event, AuthResponse):
            await self._auth_response(event)
        elif isinstance(event, IdleDone):
            await self._idle_done(event)
        elif isinstance(event, Hangup):
            self.send(encoder.bye(event.text))
            await self.close()
        else:
            await self._command(event)

    async def _bad(self, tag: str, reply: Reply) -> None:
        self.send(reply.encode(tag))
        if self.state is State.NOT_AUTHENTICATED:
            self.bad_count += 1
            if self.bad_count >= MAX_BAD_BEFORE_AUTH:
                self.send(encoder.bye("too many invalid commands"))
                await self.close()

    async def _command(self, cmd: Command) -> None:
        try:
            await self._run(cmd)
        finally:
            # AUTHENTICATE and IDLE pause the parser; unless their exchange began, carry on parsing
            if self.parser.paused and self.idle_tag is None and self._auth_tag is None and not self.closed:
                self._pending.extend(self.parser.resume())

    async def _run(self, cmd: Command) -> None:
        started = time.perf_counter()
        name = cmd.name if cmd.name in COMMANDS else "UNKNOWN"  # metric labels from a fixed set
        result = "bad"
        try:
            result = await self._answer(cmd)
        finally:
            self.ctx.stats.imap_commands.labels(name, result).inc()
            self.ctx.stats.imap_command_duration.labels(name).observe(time.perf_counter() - started)

    async def _answer(self, cmd: Command) -> str:
        """Run one command and answer it; returns the result for the metrics (ok, no, bad)."""
        entry = COMMANDS.get(cmd.name)
        if entry is None:
            await self._bad(cmd.tag, replies.NOT_SUPPORTED)
            return "bad"
        if not entry.needs.allowed(self.state):
            await self._bad(cmd.tag, replies.WRONG_STATE)
            return "bad"
        try:
            reply = await entry.handler(self, cmd)
        except Refusal as refusal:
            reply = refusal.reply
        except Abort as abort:
            log.warning("command aborted midway, closing", extra={"command": cmd.name, "reason": str(abort)})
            await self.close()
            return "no"
        except mailstore.MailStoreError as exc:
            reply = _store_reply(exc)
        except Exception as exc:
            if isinstance(exc, ConnectionError) and self.client_gone:
                raise
            if is_unavailable(exc):  # the database went away: NO [UNAVAILABLE], the client retries
                log.warning("store unavailable", extra={"command": cmd.name, "error": repr(exc)})
                reply = replies.UNAVAILABLE
            else:
                log.exception("command failed", extra={"command": cmd.name})
                reply = replies.SERVER_BUG
        if reply is None or self.closed or self.idle_tag is not None or self._auth_tag is not None:
            # already answered (LOGOUT, STARTTLS), or the command continues (IDLE, AUTHENTICATE)
            return reply.kind.lower() if reply is not None else "ok"
        if self.state is State.SELECTED:
            await self.sync(allow_expunge=cmd.uid or cmd.name not in _NO_EXPUNGE_DURING,
                            poll=cmd.name not in _SYNC_ON_NOTIFY)
            if self.closed:  # the mailbox was deleted: BYE, and no tagged reply
                return reply.kind.lower()
        if reply.kind == "BAD":
            await self._bad(cmd.tag, reply)
        else:
            self.send(reply.encode(cmd.tag))
        return reply.kind.lower()

    # --- mailbox updates
    async def sync(self, allow_expunge: bool = True, poll: bool = True) -> None:
        """Tell the client what changed in its selected mailbox since it was last told. Without `poll`,
        the store is asked only if a notification came since the last time (any change to the mailbox,
        from any process, sends one when it commits; a lost notification connection wakes every
        subscriber when it is back), so a client reading its mailbox costs no extra query per command.
        When the mailbox was deleted (by another session: our own DELETE deselects it first), the session
        ends with BYE, as Dovecot does (RFC 2180 §3.3: there is no other way to tell the client); callers
        check `closed` after it."""
        sel = self.selected
        if sel is None:
            return
        sub = self.subscription
        if sub is not None:
            if not poll and not sub.event.is_set():
                return
            sub.event.clear()  # before asking: a change committed from now on sets it again
        try:
            changes = await mailstore.changes_since(self.ctx.pool, sel.mailbox.id, sel.modseq)
        except BaseException:
            if sub is not None:
                sub.event.set()  # not asked after all: ask next time
            raise
        if changes is None:  # deleted (a rename keeps the id: the session goes on under the new name)
            log.info("selected mailbox deleted by another session", extra={"mailbox": sel.mailbox.id})
            self.send(encoder.bye(replies.SELECTED_DELETED))
            await self.close()
            return
        out, new = sel.apply(changes, allow_expunge)
        for line in out:
            self.send(line)
        if new:
            recent_from = None
            if not sel.readonly:
                try:
                    recent_from = await mailstore.claim_recent(self.ctx.pool, sel.mailbox.id, new[-1] + 1)
                except Exception as exc:
                    # `apply` has moved our modseq past these messages: announce them now, without
                    # \Recent, or they would never be (the database went away between the two calls).
                    if not is_unavailable(exc):
                        raise
                    log.warning("store unavailable claiming \\Recent", extra={"error": repr(exc)})
            for line in sel.add_new(new, recent_from):
                self.send(line)

    def subscribe(self, mailbox_id: int) -> Subscription | None:
        """A wait on the mailbox's changes (None without a notifier), to be handed to `select`."""
        return self.ctx.notifier.subscribe(mailbox_id) if self.ctx.notifier is not None else None

    def select(self, sel: SelectedMailbox, subscription: Subscription | None) -> None:
        """Enter SELECTED with the `subscription` taken (by `subscribe`) before `sel` was read."""
        self.deselect()
        self.selected = sel
        self.state = State.SELECTED
        self.subscription = subscription

    def deselect(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    # --- authentication
    def login_succeeded(self, account_id: int, address: str) -> Reply | None:
        """Enter AUTHENTICATED; returns a refusal if the connection limit is reached."""
        release = self.ctx.limiter.acquire(account_id, self.transport.peer_ip)
        if release is None:
            return replies.TOO_MANY_CONNECTIONS
        self._release_slot = release
        self.account = Account(account_id, address)
        self.state = State.AUTHENTICATED
        self.parser.max_literal = AUTHENTICATED_LITERAL
        self.parser.max_append_literal = self.ctx.settings.smtp.max_message_size
        # one message per APPEND (MULTIAPPEND is not offered), plus room for the rest of the command
        self.parser.max_command = self.ctx.settings.smtp.max_message_size + AUTHENTICATED_LITERAL
        log.info("imap login", extra={"user": address, "peer": self.transport.peer_ip})
        return None

    async def login_locked(self, username: str | None) -> bool:
        """Whether this address, or this login name, has failed too often (on any protocol)."""
        return await self.ctx.guard.refused(self.transport.peer_ip, username) is not None

    async def login_failed(self, username: str | None = None) -> None:
        """A failed login: counted for the address and the name (shared with SMTP and HTTP), then a delay."""
        await self.ctx.guard.failed("imap", self.transport.peer_ip, username)
        await asyncio.sleep(self.ctx.settings.imap.auth_failure_delay)
        self.bad_count += 1

    def begin_auth_exchange(self, tag: str) -> None:
        self._auth_tag = tag
        self.send(encoder.continuation(""))
        self._pending.extend(self.parser.enter_auth())

    async def _auth_response(self, event: AuthResponse) -> None:
        from imap.handlers.not_authenticated import finish_plain  # the handler owns SASL

        tag = self._auth_tag or "*"
        self._auth_tag = None
        try:
            reply = await finish_plain(self, event)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("store unavailable", extra={"command": "AUTHENTICATE", "error": repr(exc)})
                reply = replies.UNAVAILABLE
            else:
                log.exception("authentication failed unexpectedly")
                reply = replies.SERVER_BUG
        self.send(reply.encode(tag))
        self._pending.extend(self.parser.resume())
        if reply.kind != "OK" and self.bad_count >= MAX_BAD_BEFORE_AUTH:
            self.send(encoder.bye("too many failed attempts"))
            await self.close()

    # --- IDLE (RFC 2177)
    def begin_idle(self, tag: str) -> None:
        self.idle_tag = tag
        self.send(encoder.continuation("idling"))
        self._pending.extend(self.parser.enter_idle())

    @property
    def idle_wakeup(self) -> asyncio.Event | None:
        """While idling on a mailbox: set when it may have changed (the server waits on it)."""
        if self.idle_tag is None or self.subscription is None:
            return None
        return self.subscription.event

    async def idle_changed(self) -> None:
        """The mailbox may have changed during IDLE: send what did."""
        if self.subscription is not None:
            self.subscription.event.clear()
        try:
            await self.sync(allow_expunge=True)
        except Exception as exc:
            if not is_unavailable(exc) or (isinstance(exc, ConnectionError) and self.client_gone):
                raise
            # The database is away (restarting): keep idling and look again shortly; nothing is lost,
            # the changes are still there to be found.
            log.warning("store unavailable during IDLE", extra={"error": repr(exc)})
            await asyncio.sleep(IDLE_RETRY)
            if self.subscription is not None:
                self.subscription.event.set()
            return
        if not self.closed:
            await self.transport.drain()

    async def _idle_done(self, event: IdleDone) -> None:
        tag, self.idle_tag = self.idle_tag or "*", None
        if self.state is State.SELECTED:
            await self.sync(allow_expunge=True)
            if self.closed:
                return
        self.send((replies.IDLE_DONE if event.valid else replies.IDLE_BAD).encode(tag))

    # --- end
    async def logout(self) -> None:
        self.send(encoder.bye("logging out"))

    async def close(self) -> None:
        """End the session: release what it holds; the transport closes the connection."""
        if self.closed:
            return
        self.closed = True
        self.state = State.LOGOUT
        if self._counted:
            self._counted = False
            self.ctx.stats.imap_sessions.dec()
        self.deselect()
        if self._release_slot is not None:
            self._release_slot()
            self._release_slot = None
        try:
            await self.transport.drain()
        except (ConnectionError, OSError):
            pass
        self.transport.close()


# What each refusal of the store answers; anything else is a plain NO.
_STORE_REPLIES: tuple[tuple[type[mailstore.MailStoreError], Reply], ...] = (
    (mailstore.MailboxNotFound, replies.NO_SUCH_MAILBOX),
    (mailstore.MailboxExists, replies.MAILBOX_EXISTS),
    (mailstore.MailboxHasChildren, replies.HAS_CHILDREN),
    (mailstore.OverQuota, replies.OVER_QUOTA),
    (mailstore.TooManyKeywords, replies.TOO_MANY_KEYWORDS),
    (mailstore.TooManyMailboxes, replies.TOO_MANY_MAILBOXES),
    (mailstore.MessagesExpunged, replies.EXPUNGE_ISSUED),
)


def _store_reply(exc: mailstore.MailStoreError) -> Reply:
    return next((reply for kind, reply in _STORE_REPLIES if isinstance(exc, kind)), replies.CANNOT)


from imap import handlers  # noqa: E402,F401  (registers the command handlers)
