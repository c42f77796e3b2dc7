"""Who is calling: HTTP Basic with account credentials, or a bearer API token with scopes.

Owns authentication and the per-caller request limit for the API; failed logins are counted by the
process's `mailcore.limits.AuthGuard`, together with SMTP AUTH and IMAP logins. Basic sends the
account password, so it is accepted only over TLS (or from loopback when `http.allow_plaintext_basic`).
Before a password is checked, the failure buckets for the client address and the account must have room;
a failure is charged to both, so guessing costs the attacker a 429 long before it costs us argon2 time.
A Basic caller has the `send` and `read` scopes; `admin` exists only on tokens made for it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from mailcore.passwords import verify_password
from mailcore.proxygate import ClientAddress
from mailserver.api.context import ApiContext
from mailserver.api.problems import Problem, too_many, unauthorized
from mailserver.api.server import CLIENT_SCOPE_KEY
from storage import accounts, tokens
from storage.accounts import Account

BASIC_SCOPES = ("send", "read")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    account: Account
    scopes: tuple[str, ...]
    token_id: int | None

    @property
    def limit_key(self) -> str:
        """The request-rate bucket: per token, or per account for Basic."""
        return f"token:{self.token_id}" if self.token_id is not None else f"account:{self.account.id}"


def client_address(request: Request) -> ClientAddress:
    """The client of the connection: the socket's peer, or the source a trusted load balancer gave in
    its PROXY header (`mailserver.api.server`). No HTTP header (X-Forwarded-For...) is believed."""
    found = request.scope.get(CLIENT_SCOPE_KEY)
    if isinstance(found, ClientAddress):
        return found
    return ClientAddress(request.client.host if request.client else "unknown", request.client.port
                         if request.client else 0)


def client_ip(request: Request) -> str:
    """The client's address, as rate limits, auth-failure counting and logs key on it."""
    return client_address(request).ip


async def authenticate(request: Request) -> Principal:
    """Authenticate the request and spend one token of its request budget; raise 401 or 429."""
    ctx: ApiContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        principal = await _bearer(ctx, request, credentials.strip())
    elif scheme == "basic":
        principal = await _basic(ctx, request, credentials.strip())
    else:
        raise unauthorized()
    decision = await ctx.limits.api_requests.take(principal.limit_key)
    if not decision.allowed:
        raise too_many(ctx.limits.api_requests.name, decision.retry_after)
    request.state.principal = principal
    return principal


async def _guard(ctx: ApiContext, ip: str, login: str | None) -> None:
    refused = await ctx.auth.refused(ip, login)
    if refused is not None:
        name, decision = refused
        raise too_many(name, decision.retry_after)


async def _failed(ctx: ApiContext, ip: str, login: str | None) -> Problem:
    await ctx.auth.failed("http", ip, login)
    return unauthorized("invalid credentials")


async def _bearer(ctx: ApiContext, request: Request, secret: str) -> Principal:
    ip = client_ip(request)
    await _guard(ctx, ip, None)
    token = await tokens.authenticate_token(ctx.pool, secret) if secret else None
    if token is None:
        raise await _failed(ctx, ip, None)
    account = await accounts.get_account(ctx.pool, token.address)
    if account is None or account.disabled:
        raise await _failed(ctx, ip, None)
    return Principal(account=account, scopes=token.scopes, token_id=token.id)


async def _basic(ctx: ApiContext, request: Request, blob: str) -> Principal:
    client = client_address(request)
    ip = client.ip
    secure = request.url.scheme == "https"
    # A proxied client is never "loopback", whatever its address: the balancer is not this machine's user.
    if not secure and not (ctx.settings.http.allow_plaintext_basic and client.trusted_loopback):
        raise unauthorized("Basic authentication needs HTTPS; use an API token (Bearer) or TLS")
    try:
        login, sep, password = base64.b64decode(blob, validate=True).decode("utf-8").partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and the ValueError of a non-ASCII str
        login, sep, password = "", "", ""
    if not sep or not login:
        raise await _failed(ctx, ip, None)
    await _guard(ctx, ip, login)
    account = await accounts.get_account(ctx.pool, login)
    ok = await verify_password(account.password_hash if account else None, password)
    if not ok or account is None or account.disabled:
        raise await _failed(ctx, ip, login)
    return Principal(account=account, scopes=BASIC_SCOPES, token_id=None)


def require(principal: Principal, scope: str) -> None:
    """403 unless the caller has `scope`."""
    if scope not in principal.scopes:
        raise Problem(403, f"this credential lacks the '{scope}' scope", kind="insufficient-scope")


# The dependency every authenticated route declares: `principal: Caller`.
Caller = Annotated[Principal, Depends(authenticate)]
