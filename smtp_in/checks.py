"""Policy checks staged like SMTP itself: connection, sender, recipient, body. Each returns a verdict;
the session turns verdicts into replies.

- connection: `mailcore.connections.ConnectionSlots` (overall and per client address; 421 4.7.0 beyond).
- sender: `check_sender` (submission: the authenticated account must own MAIL FROM, else 553 5.7.1);
  on the MX, SPF (`smtp_in.senderauth`) starts here and its `SenderResults` reach the body checks.
- recipient: `route_recipient` (our domain and a known user, or relay for authenticated clients), from
  the process's `storage.routecache.RouteCache` when the listener has one.
- body: `BodyCheck` implementations run after the whole message is in; DKIM/ARC/DMARC
  (`smtp_in.senderauth.SenderAuthentication`) is one.
  A `BodyVerdict` says accept, quarantine (to Junk), reject or tempfail, and may carry an
  Authentication-Results value to prepend.
This module talks to the store only through `storage.accounts` (and its cache); it sends nothing to the peer.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from mailcore import replies
from mailcore.address import Address
from mailcore.auth.results import header_field
from mailcore.auth.spf import SPFResult
from mailcore.received import clean_value
from mailcore.replies import Reply
from storage import accounts
from storage.accounts import Account
from storage.routecache import RouteCache

# --- sender --------------------------------------------------------------------------------------------

async def check_sender(pool: asyncpg.Pool, account: Account | None, sender: Address | None) -> Reply | None:
    """For an authenticated submission: None if `account` may use `sender`, else the refusal."""
    if account is None:
        return None
    if sender is None or not await accounts.may_send_as(pool, account, sender):
        return replies.SENDER_NOT_OWNED
    return None


@dataclass(frozen=True)
class SenderResults:
    """What the sender stage learnt on the MX: SPF of MAIL FROM (of postmaster@HELO for a null sender)
    and, when MAIL FROM was not null, of the HELO name on its own (recorded only, RFC 7208 §2.3)."""

    spf: SPFResult
    helo_spf: SPFResult | None = None


# --- recipient -----------------------------------------------------------------------------------------

@dataclass
class RecipientRoute:
    """Where one accepted RCPT goes: local (account id, reached-as) pairs and remote addresses.
    `unlimited`: those local accounts the routing answer knows to have no quota, whose delivery need not
    check one (`storage.delivery.LocalRecipient.unlimited`); the others' is checked at commit."""

    local: list[tuple[int, str]] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    unlimited: frozenset[int] = frozenset()


async def postmaster_address(pool: asyncpg.Pool, configured: str) -> str | None:
    """The configured postmaster account, else the first account created."""
    return configured or await accounts.first_account_address(pool)


async def route_recipient(pool: asyncpg.Pool, address: Address | None, *, authenticated: bool,
                          postmaster: str, size_hint: int | None = None,
                          cache: RouteCache | None = None) -> RecipientRoute | Reply:
    """Decide one RCPT: a route, or the reply refusing it. `address` None is the bare `postmaster`.
    A local account whose quota is used up (or would be by the MAIL SIZE= hint) gets 452 4.2.2; the
    message's real size is checked again when it is stored (`storage.delivery`).
    With a `cache` the answer usually comes from memory (`storage.routecache`), quotas excepted."""
    if address is None or address.local.lower() == "postmaster":
        return await _postmaster_route(pool, address, authenticated=authenticated, postmaster=postmaster,
                                       size_hint=size_hint)
    if cache is not None:
        routing, full = await cache.route(pool, address, size_hint or 0)
    else:
        routing, full = await accounts.route_address(pool, address, size_hint or 0)
    if not routing.ours:
        return RecipientRoute(remote=[str(address)]) if authenticated else replies.RELAY_DENIED
    if full:
        return replies.MAILBOX_FULL
    if not (routing.local or routing.remote):
        return replies.MAILBOX_UNAVAILABLE
    return RecipientRoute(local=list(routing.local), remote=list(routing.remote),
                          unlimited=frozenset(a for a, _ in routing.local if a not in routing.quota_ids))


async def _postmaster_route(pool: asyncpg.Pool, address: Address | None, *, authenticated: bool,
                            postmaster: str, size_hint: int | None) -> RecipientRoute | Reply:
    """Postmaster goes to the configured account (or the first one), never through the cache."""
    route = await _route(pool, address, authenticated=authenticated, postmaster=postmaster)
    if isinstance(route, RecipientRoute) and route.local:
        full = await accounts.accounts_over_quota(pool, [a for a, _ in route.local], size_hint or 0)
        if full:
            return replies.MAILBOX_FULL
    return route


async def _route(pool: asyncpg.Pool, address: Address | None, *, authenticated: bool,
                 postmaster: str) -> RecipientRoute | Reply:
    """The bare `postmaster`, or postmaster@domain."""
    if address is None:  # RFC 5321 §4.5.1: bare "postmaster" must be accepted
        pm = await postmaster_address(pool, postmaster)
        account = await accounts.get_account(pool, pm) if pm else None
        if account is None:
            return replies.MAILBOX_UNAVAILABLE
        return RecipientRoute(local=[(account.id, account.address)])
    if await accounts.is_local_domain(pool, address.domain):
        pm = await postmaster_address(pool, postmaster)
        route = await accounts.resolve_recipient(pool, address, pm)
        if not route:
            return replies.MAILBOX_UNAVAILABLE
        return RecipientRoute(local=list(route.local), remote=list(route.remote))
    if authenticated:
        return RecipientRoute(remote=[str(address)])
    return replies.RELAY_DENIED


# --- body ----------------------------------------------------------------------------------------------

class Action(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # deliver local copies to Junk
    TEMPFAIL = "tempfail"  # 451 4.7.x
    REJECT = "reject"  # 550 5.7.1


_SEVERITY = {Action.ACCEPT: 0, Action.QUARANTINE: 1, Action.TEMPFAIL: 2, Action.REJECT: 3}


@dataclass(frozen=True)
class BodyVerdict:
    """The outcome of one body check. `reply` overrides the default reply for tempfail/reject;
    `auth_results` is an Authentication-Results value (RFC 8601) without the field name."""

    action: Action = Action.ACCEPT
    reply: Reply | None = None
    auth_results: str | None = None


@dataclass(frozen=True)
class MessageContext:
    """What a body check may know about the transaction."""

    listener: str
    peer_ip: str
    helo: str
    mail_from: str
    recipients: tuple[str, ...]
    tls: bool
    authenticated_as: str | None
    sender_results: SenderResults | None = None


class BodyCheck(Protocol):
    """A check of the complete message (DKIM, DMARC, ARC, spam scoring). Must not modify `message`."""

    async def check(self, ctx: MessageContext, message: bytes | bytearray) -> BodyVerdict: ...


async def run_body_checks(checks: Sequence[BodyCheck], ctx: MessageContext,
                          message: bytes | bytearray) -> tuple[BodyVerdict, list[bytes]]:
    """Run every check; the strictest action wins. Returns it and the header fields to prepend."""
    worst = BodyVerdict()
    headers: list[bytes] = []
    for check in checks:
        verdict = await check.check(ctx, message)
        if verdict.auth_results:  # folded before each result: hundreds of them made one line over 998
            headers.append(header_field(clean_value(verdict.auth_results)))
        if _SEVERITY[verdict.action] > _SEVERITY[worst.action]:
            worst = verdict
    return worst, headers


def verdict_reply(verdict: BodyVerdict) -> Reply | None:
    """The reply a rejecting or deferring verdict sends (None: go on and deliver)."""
    if verdict.action is Action.REJECT:
        return verdict.reply or replies.CONTENT_REJECTED
    if verdict.action is Action.TEMPFAIL:
        return verdict.reply or replies.CHECK_TEMPFAIL
    return None
