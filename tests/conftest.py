"""Fixtures shared by every test: a real PostgreSQL (a fresh database per test) and a pool on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.pg import PgServer


@pytest.fixture(scope="session")
def test_postgres() -> Iterator[PgServer]:
    """One server for the run, with a migrated template database."""
    pg = PgServer()
    asyncio.run(pg.prepare_template())
    yield pg
    asyncio.run(pg.drop_all())


@pytest.fixture
async def db_dsn(test_postgres: PgServer) -> str:
    """The DSN of a fresh, migrated database for this test."""
    return await test_postgres.new_database()


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on this test's database."""
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture
async def dead_pool() -> AsyncIterator[asyncpg.Pool]:
    """A pool on a port where nothing listens (min_size=0: it only dials when asked), for the
    database-unavailable tests of every protocol."""
    from storage.db import ConnectBackoff
    from tests.server_process import free_port

    p = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", min_size=0,
                                  max_size=2, connect=ConnectBackoff())
    yield p
    await p.close()
