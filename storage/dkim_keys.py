"""DKIM signing keys of hosted domains (the `dkim_keys` table).

Owns storing and finding keys; it neither generates nor uses them (signing is `mailcore.auth.dkim`'s).
Keys are provisioned by `mailserver dkim generate`; the outbound queue asks for "the newest key" of
each domain that may sign a message (its From domain, that domain's parents, the envelope sender's:
`mailcore.auth.signing`), and the newest key of the first of them that has one signs. Rotation is:
generate, publish, wait for DNS, and the new key signs from its creation on (publish the record first:
see docs/authentication.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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
    created_at: dt.datetime | None = None


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


async def signing_keys(conn: Conn, domains: Sequence[str]) -> dict[str, DKIMKey]:
    """The newest key of each of `domains` that has one (and is ours), in one query: the outbound queue
    asks for every domain that might sign a message at once (see `mailcore.auth.signing`)."""
    names = list(dict.fromkeys(d.lower() for d in domains))
    if not names:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (d.name) d.name, k.selector, k.algorithm, k.private_key FROM dkim_keys k"
        " JOIN domains d ON d.id = k.domain_id WHERE d.name = ANY($1::text[])"
        " ORDER BY d.name, k.created_at DESC, k.id DESC", names)
    return {row["name"]: DKIMKey(*row) for row in rows}


async def list_keys(conn: Conn, domain: str) -> list[DKIMKey]:
    """Every key of a hosted domain, newest (the signing one) first. StoreError for an unknown domain."""
    name = domain.lower().rstrip(".")
    if await conn.fetchval("SELECT id FROM domains WHERE name = $1", name) is None:
        raise StoreError(f"unknown domain: {domain}")
    rows = await conn.fetch(
        "SELECT d.name, k.selector, k.algorithm, k.private_key, k.created_at FROM dkim_keys k"
        " JOIN domains d ON d.id = k.domain_id WHERE d.name = $1 ORDER BY k.created_at DESC, k.id DESC", name)
    return [DKIMKey(*row) for row in rows]
