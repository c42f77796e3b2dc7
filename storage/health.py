"""Is this instance's database usable: reachable, answering, and on the schema this code expects.

Used by `mailserver health` (exit 0/1, for systemd, scripts and load balancer agents) and meant for the
HTTP API's `/healthz`. Opens one short-lived connection, never the server's pool; must not change data.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from storage.db import UNAVAILABLE_ERRORS, _redact
from storage.migrations import applied_versions, available


@dataclass
class Health:
    """The verdict: `ok` only if the database answered and no shipped migration is pending."""

    ok: bool
    latency_ms: float = 0.0
    applied: int = 0
    expected: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return (f"ok: database answered in {self.latency_ms:.0f} ms; "
                    f"migrations {self.applied}/{self.expected} applied")
        return "unhealthy: " + "; ".join(self.problems)


async def database_health(dsn: str, within: float = 5.0) -> Health:
    """Connect, run a query, and compare applied migrations with those shipped."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "mailserver-health"})
            try:
                await conn.fetchval("SELECT 1")
                latency = (time.monotonic() - start) * 1000
                have = await applied_versions(conn)
            finally:
                await conn.close()
    except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
        return Health(False, problems=[f"database {_redact(dsn)} unreachable: {type(exc).__name__}: {exc}"])
    shipped = available()
    pending = [m for m in shipped if m.version not in have]
    problems = [f"migration {m.version:04d} {m.name} not applied (run: mailserver db migrate)" for m in pending]
    return Health(not problems, latency, len(shipped) - len(pending), len(shipped), problems)
