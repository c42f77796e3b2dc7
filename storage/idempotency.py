"""Idempotency keys for API writes: claim a key before acting, record the response after.

Owns the rows of `api_idempotency`. The protocol (draft-ietf-httpapi-idempotency-key-header):
`claim` inserts the key with the request's hash before anything is sent, so two concurrent requests with
one key cannot both act. The second sees the first's row: a stored response is replayed, a row still
without one is "in progress" (409), a different request hash is a misuse (422). `complete` stores the
response; `release` forgets a claim whose request failed before it had any effect, so it may be retried.
If the process dies between sending and `complete`, the key stays claimed until it expires: the client
sees 409 rather than a second send. Knows no HTTP beyond storing a status and a JSON body.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from storage.accounts import Conn


class ClaimState(enum.Enum):
    """What `claim` found."""

    NEW = "new"  # ours: go ahead
    DONE = "done"  # answered before: replay `status` and `response`
    IN_PROGRESS = "in_progress"  # another request holds it
    MISMATCH = "mismatch"  # the key was used with a different request


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim, with the stored response when there is one."""

    state: ClaimState
    status: int | None = None
    response: Any = None


async def claim(conn: Conn, account_id: int, key: str, request_hash: bytes, ttl: float) -> Claim:
    """Claim `key` for this account and request, or report what holds it."""
    await conn.execute("DELETE FROM api_idempotency WHERE account_id = $1 AND key = $2 AND expires_at < now()",
                       account_id, key)
    inserted = await conn.fetchval(
        "INSERT INTO api_idempotency (account_id, key, request_hash, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT DO NOTHING RETURNING 1",
        account_id, key, request_hash, ttl)
    if inserted:
        return Claim(ClaimState.NEW)
    row = await conn.fetchrow("SELECT request_hash, status, response FROM api_idempotency"
                              " WHERE account_id = $1 AND key = $2", account_id, key)
    if row is None:  # expired and deleted between our statements: rare; treat as busy, the client retries
        return Claim(ClaimState.IN_PROGRESS)
    if bytes(row["request_hash"]) != request_hash:
        return Claim(ClaimState.MISMATCH)
    if row["status"] is None:
        return Claim(ClaimState.IN_PROGRESS)
    return Claim(ClaimState.DONE, row["status"], json.loads(row["response"]))


async def complete(conn: Conn, account_id: int, key: str, status: int, response: Any) -> None:
    """Record the response to replay for this key."""
    await conn.execute("UPDATE api_idempotency SET status = $3, response = $4::jsonb"
                       " WHERE account_id = $1 AND key = $2", account_id, key, status, json.dumps(response))


async def release(conn: Conn, account_id: int, key: str) -> None:
    """Forget an unanswered claim (the request failed without effect)."""
    await conn.execute("DELETE FROM api_idempotency WHERE account_id = $1 AND key = $2 AND status IS NULL",
                       account_id, key)


async def purge_expired(conn: Conn) -> int:
    """Delete expired keys; return how many."""
    status = await conn.execute("DELETE FROM api_idempotency WHERE expires_at < now()")
    return int(status.split()[-1])
