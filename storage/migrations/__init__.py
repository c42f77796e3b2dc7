"""Versioned schema migrations: numbered SQL files in this folder, applied once each, in order.

Applying is idempotent and safe when several instances start at once (an advisory lock serialises them).
Each file runs in its own transaction together with its row in `schema_migrations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any constant will do, as long as every instance uses the same one.
_LOCK_KEY = 0x6D61696C  # "mail"


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version number, name and text."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this version of the code, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    return found


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    """Versions already applied to this database, with when."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    return {r["version"]: r["applied_at"].isoformat() for r in rows}


async def apply_migrations(conn: asyncpg.Connection, through: int | None = None) -> list[Migration]:
    """Apply every migration not yet applied (up to version `through`, when given: a test of one
    migration upgrades a store to the version before it); return those applied now."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await _ensure_table(conn)
        have = await applied_versions(conn)
        for migration in available():
            if migration.version in have or (through is not None and migration.version > through):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done
