"""TLS outcomes of outbound sessions, counted per day (the `tls_outcomes` table): what TLS-RPT
aggregate reports (RFC 8460 §4) will be made from. It adds counts; it does not decide result types
(that is `smtp_out.client`'s) nor send reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class OutcomeKey:
    """What one row counts."""

    day: dt.date
    policy_domain: str
    policy_type: str    # 'sts', 'tlsa' or 'no-policy-found' (RFC 8460 §4.4)
    result_type: str    # 'success' or an RFC 8460 §4.3 result type
    mx_host: str
    mx_address: str


async def add(conn: asyncpg.Connection | asyncpg.Pool, counts: dict[OutcomeKey, tuple[int, str]]) -> None:
    """Add `counts` (key -> (sessions, latest detail)) to the table in one statement."""
    if not counts:
        return
    keys = list(counts)
    await conn.execute(
        "INSERT INTO tls_outcomes AS t (day, policy_domain, policy_type, result_type, mx_host, mx_address,"
        " sessions, detail)"
        " SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
        " $7::bigint[], $8::text[])"
        " ON CONFLICT (day, policy_domain, policy_type, result_type, mx_host, mx_address) DO UPDATE"
        " SET sessions = t.sessions + EXCLUDED.sessions,"
        " detail = CASE WHEN EXCLUDED.detail = '' THEN t.detail ELSE EXCLUDED.detail END",
        [k.day for k in keys], [k.policy_domain for k in keys], [k.policy_type for k in keys],
        [k.result_type for k in keys], [k.mx_host for k in keys], [k.mx_address for k in keys],
        [counts[k][0] for k in keys], [counts[k][1] for k in keys])


async def for_day(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> dict[OutcomeKey, tuple[int, str]]:
    """Every count of one day."""
    rows = await conn.fetch(
        "SELECT day, policy_domain, policy_type, result_type, mx_host, mx_address, sessions, detail"
        " FROM tls_outcomes WHERE day = $1", day)
    return {OutcomeKey(*tuple(r)[:6]): (r["sessions"], r["detail"]) for r in rows}
