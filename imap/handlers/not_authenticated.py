"""Commands of the NOT AUTHENTICATED state (RFC 3501 §6.2): STARTTLS, LOGIN, AUTHENTICATE PLAIN.

Authentication is refused before TLS unless plaintext is allowed for loopback (the dev profile);
a failed attempt is answered only after a delay, and the same for unknown and known users. Failures
count per client address and per login name together with SMTP AUTH and HTTP Basic (the session's
`AuthGuard`); past the limit every attempt gets NO [UNAVAILABLE] without a password check.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from imap import replies
from imap.commands import Authenticate, AuthResponse, Login, Simple
from imap.dispatch import Needs, command
from imap.encoder import Code
from imap.replies import Refusal, Reply
from mailcore.passwords import verify_password
from storage import accounts

if TYPE_CHECKING:
    from imap.session import Session


@command("STARTTLS", needs=Needs.NOT_AUTHENTICATED)
async def starttls(session: Session, cmd: Simple) -> None:
    if session.transport.secure:
        raise Refusal(replies.TLS_ACTIVE)
    if session.ctx.tls is None:
        raise Refusal(replies.TLS_UNAVAILABLE)
    session.send(replies.TLS_READY.encode(cmd.tag))
    await session.transport.drain()
    await session.transport.start_tls()
    # RFC 3501 §6.2.1 / RFC 2595 §3.1: anything the client pipelined before the handshake is dropped
    session.parser = session._new_parser()
    session._pending.clear()


async def _login(session: Session, username: str, password: str, tag_name: str) -> Reply:
    # LOGIN's strings may be any 8-bit bytes (the grammar keeps them, surrogate-escaped). A name that is
    # not UTF-8 names no account; the store and the failure counters take text, so it goes as such.
    username = username.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not session.auth_allowed:
        raise Refusal(replies.PRIVACY_REQUIRED)
    if await session.login_locked(username):
        return replies.AUTH_LOCKED
    account = await accounts.get_account(session.ctx.pool, username)
    good = await verify_password(account.password_hash if account else None, password)
    if account is None or not good or account.disabled:
        await session.login_failed(username)
        return replies.AUTH_FAILED
    await session.ctx.guard.succeeded(username)
    refused = session.login_succeeded(account.id, account.address)
    if refused is not None:
        await session.login_failed()
        return refused
    return replies.completed(tag_name, _capability_code(session))


def _capability_code(session: Session) -> Code:
    return Code.capability(session.capabilities())  # Thunderbird reads them here (clients/thunderbird.md)


@command("LOGIN", needs=Needs.NOT_AUTHENTICATED)
async def login(session: Session, cmd: Login) -> Reply:
    return await _login(session, cmd.username, cmd.password, cmd.name)


@command("AUTHENTICATE", needs=Needs.NOT_AUTHENTICATED)
async def authenticate(session: Session, cmd: Authenticate) -> Reply | None:
    if cmd.mechanism != "PLAIN":
        return replies.MECHANISM_UNSUPPORTED
    if not session.auth_allowed:
        return replies.PRIVACY_REQUIRED
    if cmd.initial_response is not None:  # RFC 4959 SASL-IR
        return await _plain(session, cmd.initial_response)
    session.begin_auth_exchange(cmd.tag)
    return None


async def finish_plain(session: Session, event: AuthResponse) -> Reply:
    """The client's answer to the `+ ` continuation of AUTHENTICATE PLAIN."""
    if event.cancelled:
        return replies.AUTH_CANCELLED
    return await _plain(session, event.data)


async def _plain(session: Session, data: bytes) -> Reply:
    # RFC 4616: [authzid] NUL authcid NUL passwd; "=" is the empty initial response (RFC 4959)
    try:
        decoded = b"" if data.strip() == b"=" else base64.b64decode(data.strip(), validate=True)
        authzid, user, password = decoded.split(b"\0")
        authz, name, secret = (x.decode("utf-8") for x in (authzid, user, password))
    except (binascii.Error, ValueError):
        return replies.AUTH_MALFORMED
    if authz and authz.lower() != name.lower():
        await session.login_failed(name)
        return replies.AUTH_FAILED  # no proxy authorisation
    return await _login(session, name, secret, "AUTHENTICATE")
