"""Migrations apply once, in order, and again as a no-op; concurrent starts do not collide."""

from __future__ import annotations

import asyncio

import asyncpg

from storage.migrations import applied_versions, apply_migrations, available
from tests.pg import PgServer


async def test_migrations_are_idempotent_and_concurrent(test_postgres: PgServer) -> None:
    dsn = await test_postgres.new_database(migrated=False)
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*[apply_migrations(c) for c in conns])
        assert sorted(len(r) for r in results) == [0, 0, len(available())]
        assert await apply_migrations(conns[0]) == []
        assert sorted(await applied_versions(conns[0])) == [m.version for m in available()]
        assert await conns[0].fetchval("SELECT count(*) FROM domains") == 0
    finally:
        for c in conns:
            await c.close()
