"""DKIM signing keys of hosted domains (the `dkim_keys` table).

Owns storing and finding keys; it neither generates nor uses them (signing is `mailcore.auth.dkim`'s).
How keys are provisioned (CLI, API, rotation) is not decided yet: this is the minimal seam the outbound
queue needs, "the newest key of the sender's domain signs".
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.accounts import StoreError

Conn = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class DKIMKey:
    """A private key that signs for `domain` under `selector`."""

    domain: str
    selector: str
    algorithm: str
    private_key: str


async def add_key(conn: Conn, domain: str, selector: str, private_key_pem: str,
                  algorithm: str = "rsa-sha256") -> int:
    """Store a key for a hosted domain; it becomes the one that signs."""
    domain_id = await conn.fetchval("SELECT id FROM domains WHERE name = $1", domain.lower())
    if domain_id is None:
        raise StoreError(f"unknown domain: {domain}")
    try:
        return await conn.fetchval(
            "INSERT INTO dkim_keys (domain_id, selector, algorithm, private_key) VALUES ($1, $2, $3, $4)"
            " RETURNING id", domain_id, selector, algorithm, private_key_pem)
    except asyncpg.UniqueViolationError:
        raise StoreError(f"{selector}._domainkey.{domain} already has a key") from None
    except asyncpg.CheckViolationError:
        raise StoreError("invalid selector or algorithm") from None


async def signing_key(conn: Conn, domain: str) -> DKIMKey | None:
    """The newest key of `domain`, or None when it has none (or is not ours)."""
    row = await conn.fetchrow(
        "SELECT d.name, k.selector, k.algorithm, k.private_key FROM dkim_keys k"
        " JOIN domains d ON d.id = k.domain_id WHERE d.name = $1 ORDER BY k.created_at DESC, k.id DESC"
        " LIMIT 1", domain.lower())
    return DKIMKey(*row) if row else None
