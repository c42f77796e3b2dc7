"""Recipient domains' MTA-STS policies as fetched (the `mta_sts_policies` table, migration 0015).

Owns keeping and finding them; fetching and parsing are `smtp_out.mtasts`'s and `mailcore.mtasts`'s.
A row is the policy text with the record id it was fetched for and when it expires; an expired row is
never returned (and is replaced by the next fetch).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

Conn = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class StoredPolicy:
    policy_id: str
    text: str
    expires_at: dt.datetime


async def load(conn: Conn, domain: str, now: dt.datetime) -> StoredPolicy | None:
    """The policy kept for `domain` that has not expired at `now`, or None."""
    row = await conn.fetchrow("SELECT policy_id, policy, expires_at FROM mta_sts_policies"
                              " WHERE domain = $1 AND expires_at > $2", domain, now)
    return None if row is None else StoredPolicy(row["policy_id"], row["policy"], row["expires_at"])


async def save(conn: Conn, domain: str, policy_id: str, text: str, expires_at: dt.datetime) -> None:
    """Keep a freshly fetched policy (replacing what was kept for the domain)."""
    await conn.execute(
        "INSERT INTO mta_sts_policies (domain, policy_id, policy, expires_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, policy = EXCLUDED.policy,"
        " fetched_at = now(), expires_at = EXCLUDED.expires_at", domain, policy_id, text, expires_at)
