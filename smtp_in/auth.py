"""SMTP AUTH (RFC 4954) for submission: SASL PLAIN (RFC 4616) and LOGIN, verification and lockout.

`decode_plain` is sans-I/O. `Authenticator` checks a login and password against the store with argon2
off the event loop (`mailcore.passwords`), spends the same time for unknown users, waits
`auth_failure_delay` after a failure, and locks out a client address or a login name after too many
failures through the process's `mailcore.limits.AuthGuard`, which IMAP and the HTTP API share (a
failure on one protocol counts on the others). It never says whether the account exists: unknown
user, wrong password and disabled account get the same answer.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass

import asyncpg

from mailcore import replies
from mailcore.limits import AuthGuard
from mailcore.passwords import verify_password
from mailcore.replies import Reply
from storage import accounts
from storage.accounts import Account

log = logging.getLogger(__name__)

MECHANISMS = ("PLAIN", "LOGIN")


class SASLError(Exception):
    """A malformed exchange; `reply` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def decode_b64(blob: bytes) -> bytes:
    """A client response line: base64, or `*` to cancel (RFC 4954 §4)."""
    blob = blob.strip()
    if blob == b"*":
        raise SASLError(replies.AUTH_ABORTED)
    if blob == b"=":  # an empty initial response (RFC 4954 §4)
        return b""
    try:
        return b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError(replies.AUTH_BAD_BASE64) from None


def decode_plain(data: bytes) -> tuple[str, str]:
    """RFC 4616: `authzid NUL authcid NUL passwd` -> (login, password). authzid must be empty or the login."""
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise SASLError(replies.AUTH_BAD_BASE64.with_text("malformed PLAIN response"))
    try:
        authzid, login, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SASLError(replies.AUTH_BAD_BASE64.with_text("malformed PLAIN response")) from None
    if authzid and authzid.lower() != login.lower():
        raise SASLError(replies.AUTH_FAILED)
    return login, password


def decode_text(data: bytes) -> str:
    """A LOGIN username or password."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(replies.AUTH_BAD_BASE64) from None


@dataclass
class Authenticator:
    """Verifies logins for every session of a service; the guard is the process's."""

    pool: asyncpg.Pool
    guard: AuthGuard
    failure_delay: float

    async def locked(self, ip: str, login: str | None = None) -> bool:
        """Whether the address, or the login name if given, is locked out after too many failures."""
        return await self.guard.refused(ip, login) is not None

    async def verify(self, ip: str, login: str, password: str) -> Account | Reply:
        """The account on success; else the reply (after the failure delay)."""
        if await self.locked(ip, login):
            log.warning("smtp auth locked out", extra={"peer": ip, "login": login[:100]})
            return replies.AUTH_TEMPORARILY_LOCKED
        account = await accounts.get_account(self.pool, login)
        usable = account is not None and not account.disabled
        ok = await verify_password(account.password_hash if usable and account else None, password)
        if ok and account is not None:
            await self.guard.succeeded(login)
            return account
        await self.guard.failed("smtp", ip, login)
        log.info("smtp auth failed", extra={"peer": ip, "login": login[:100]})
        await asyncio.sleep(self.failure_delay)
        return replies.AUTH_FAILED
