"""TLS outcomes of outbound sessions, counted per day (the `tls_outcomes` table): what TLS-RPT
aggregate reports (RFC 8460 §4) are made from, and the reports sent (`tls_reports`: one claim per day and
policy domain). It adds, reads and prunes counts and claims reports; it does not decide result types (that
is `smtp_out.client`'s) nor build or send reports (`smtp_out.tlsreports`).
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


async def for_domain(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date,
                     domain: str) -> dict[OutcomeKey, tuple[int, str]]:
    """The counts of one day for one policy domain."""
    rows = await conn.fetch(
        "SELECT day, policy_domain, policy_type, result_type, mx_host, mx_address, sessions, detail"
        " FROM tls_outcomes WHERE day = $1 AND policy_domain = $2", day, domain)
    return {OutcomeKey(*tuple(r)[:6]): (r["sessions"], r["detail"]) for r in rows}


async def unreported(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[str]:
    """The policy domains with counts on `day` whose report nobody has claimed yet."""
    rows = await conn.fetch(
        "SELECT DISTINCT o.policy_domain FROM tls_outcomes o WHERE o.day = $1 AND NOT EXISTS"
        " (SELECT 1 FROM tls_reports r WHERE r.day = o.day AND r.policy_domain = o.policy_domain)"
        " ORDER BY 1", day)
    return [r[0] for r in rows]


async def claim_report(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, domain: str, report_id: str,
                       owner: str, outcome: str = "") -> bool:
    """Claim the report of `domain` for `day`; False when another instance (or an earlier run) has it."""
    return await conn.fetchval(
        "INSERT INTO tls_reports (day, policy_domain, report_id, claimed_by, outcome) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT DO NOTHING RETURNING true", day, domain, report_id, owner, outcome) is not None


async def report_done(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, domain: str, outcome: str) -> None:
    """Record what came of a claimed report."""
    await conn.execute("UPDATE tls_reports SET outcome = $3 WHERE day = $1 AND policy_domain = $2",
                       day, domain, outcome)


async def prune(conn: asyncpg.Connection | asyncpg.Pool, before: dt.date) -> int:
    """Delete counts and report claims of days before `before`; how many count rows went."""
    deleted = await conn.execute("DELETE FROM tls_outcomes WHERE day < $1", before)
    await conn.execute("DELETE FROM tls_reports WHERE day < $1", before)
    return int(deleted.split()[-1])
