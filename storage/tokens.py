"""API tokens: create (returning the secret once), look up by the secret's hash, list, revoke.

Owns the rows of `api_tokens` and the token format. A token is `mst_` followed by 32 random bytes in
base64url; only its SHA-256 is stored. A slow password hash is unnecessary here: 256 random bits cannot be
guessed, so a fast hash is as safe and keeps every API request to one indexed lookup.
This module knows no HTTP; scopes are plain strings checked by the caller.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.accounts import Conn, StoreError, get_account

PREFIX = "mst_"
SCOPES = ("send", "read", "admin")


@dataclass(frozen=True)
class Token:
    """A token as listed (never with its secret)."""

    id: int
    account_id: int
    address: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used: datetime | None
    revoked_at: datetime | None


def token_hash(secret: str) -> bytes:
    """The stored form of a token secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def parse_scopes(text: str) -> list[str]:
    """'send,read' -> ['read', 'send']; refuse unknown or empty scopes."""
    scopes = sorted({s.strip().lower() for s in text.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise StoreError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    return scopes


async def create_token(conn: Conn, address: str, scopes: list[str], name: str = "") -> tuple[Token, str]:
    """Create a token for an account; return it with its secret (shown once, never stored)."""
    account = await get_account(conn, address)
    if account is None:
        raise StoreError(f"no such account: {address}")
    scopes = parse_scopes(",".join(scopes))
    secret = PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        "INSERT INTO api_tokens (account_id, name, hash, scopes) VALUES ($1, $2, $3, $4)"
        " RETURNING id, created_at", account.id, name, token_hash(secret), scopes)
    token = Token(id=row["id"], account_id=account.id, address=account.address, name=name,
                  scopes=tuple(scopes), created_at=row["created_at"], last_used=None, revoked_at=None)
    return token, secret


_SELECT = ("SELECT t.id, t.account_id, a.address, t.name, t.scopes, t.created_at, t.last_used, t.revoked_at"
           " FROM api_tokens t JOIN accounts a ON a.id = t.account_id")


def _token(row: asyncpg.Record) -> Token:
    return Token(**{**dict(row), "scopes": tuple(row["scopes"])})


async def list_tokens(conn: Conn, address: str | None = None) -> list[Token]:
    """Tokens (revoked ones included), optionally of one account, oldest first."""
    if address is None:
        rows = await conn.fetch(_SELECT + " ORDER BY t.id")
    else:
        account = await get_account(conn, address)
        if account is None:
            raise StoreError(f"no such account: {address}")
        rows = await conn.fetch(_SELECT + " WHERE t.account_id = $1 ORDER BY t.id", account.id)
    return [_token(r) for r in rows]


async def revoke_token(conn: Conn, token_id: int) -> None:
    """Revoke a token; it stops working at once. Revoking twice is an error the admin should see."""
    status = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", token_id)
    if status == "UPDATE 0":
        exists = await conn.fetchval("SELECT 1 FROM api_tokens WHERE id = $1", token_id)
        raise StoreError(f"token {token_id} is already revoked" if exists else f"no such token: {token_id}")


async def authenticate_token(conn: Conn, secret: str) -> Token | None:
    """The live token with this secret (account enabled, not revoked), marking it used; else None."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    # last_used is coarse (a minute) so a busy token does not rewrite its row on every request.
    row = await conn.fetchrow(
        "UPDATE api_tokens t SET last_used = now() FROM accounts a"
        " WHERE t.hash = $1 AND t.revoked_at IS NULL AND a.id = t.account_id AND NOT a.disabled"
        " AND (t.last_used IS NULL OR t.last_used < now() - interval '1 minute')"
        " RETURNING t.id, t.account_id, a.address, t.name, t.scopes, t.created_at, t.last_used, t.revoked_at",
        token_hash(secret))
    if row is None:
        row = await conn.fetchrow(
            _SELECT + " WHERE t.hash = $1 AND t.revoked_at IS NULL AND NOT a.disabled", token_hash(secret))
    return _token(row) if row else None
