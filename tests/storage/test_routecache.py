"""storage.routecache and migration 0011 on a real PostgreSQL: which statements notify, what is answered
from memory (a pool on a dead port proves no round trip was made), and the bounds of the cache.
Invalidation and a lost LISTEN over real SMTP sockets: tests/smtp_in/test_rcptcache.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from mailcore.address import parse_address
from storage import accounts
from storage.routecache import ROUTING_CHANNEL, RouteCache
from tests.smtp_out.conftest import until

LOCAL = "local.example"
USER = f"user@{LOCAL}"
LIMITED = f"limited@{LOCAL}"


@pytest.fixture
async def seeded(pool: asyncpg.Pool) -> asyncpg.Pool:
    await accounts.add_domain(pool, LOCAL)
    await accounts.add_domain(pool, "spare.example")
    await accounts.add_account(pool, USER, "hash")
    await accounts.add_account(pool, LIMITED, "hash", quota_bytes=10_000)
    await accounts.add_alias(pool, f"team@{LOCAL}", [USER, "friend@far.example"])
    return pool


@pytest.fixture
async def cache(db_dsn: str) -> AsyncIterator[RouteCache]:
    routes = RouteCache(db_dsn, capacity=3)
    await routes.start()
    await asyncio.wait_for(routes.wait_listening(), 10)
    yield routes
    await routes.stop()


@pytest.mark.parametrize(("statement", "notifies"), [
    ("INSERT INTO domains (name) VALUES ('new.example')", True),
    ("UPDATE domains SET name = 'renamed.example' WHERE name = 'spare.example'", True),
    ("DELETE FROM domains WHERE name = 'spare.example'", True),
    ("UPDATE accounts SET disabled = true WHERE address = 'user@local.example'", True),
    ("UPDATE accounts SET quota_bytes = 10 WHERE address = 'user@local.example'", True),
    ("UPDATE accounts SET address = 'renamed@local.example' WHERE address = 'user@local.example'", True),
    ("DELETE FROM accounts WHERE address = 'user@local.example'", True),
    ("INSERT INTO aliases (domain_id, source, target) SELECT id, 'new@local.example', 'user@local.example'"
     " FROM domains WHERE name = 'local.example'", True),
    ("UPDATE aliases SET target = 'other@far.example' WHERE target = 'friend@far.example'", True),
    ("DELETE FROM aliases", True),
    ("TRUNCATE aliases", True),
    # What every delivery and expunge does, and a password change: no route changes, the caches stay.
    ("UPDATE accounts SET used_bytes = used_bytes + 100", False),
    ("UPDATE accounts SET used_bytes = GREATEST(0, used_bytes - 100) WHERE address = 'limited@local.example'",
     False),
    ("UPDATE accounts SET password_hash = 'other'", False),
])
async def test_routing_tables_notify_only_for_routing_columns(seeded: asyncpg.Pool, db_dsn: str,
                                                              statement: str, notifies: bool) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(db_dsn)
    try:
        await listener.add_listener(ROUTING_CHANNEL, lambda _c, _p, _ch, payload: heard.put_nowait(payload))
        await seeded.execute(statement)
        # Notifications of different transactions arrive in commit order: all of the statement's are
        # in before this marker.
        await seeded.execute("SELECT pg_notify($1, 'marker')", ROUTING_CHANNEL)
        payloads = []
        while (payload := await asyncio.wait_for(heard.get(), 10)) != "marker":
            payloads.append(payload)
    finally:
        await listener.close()
    assert payloads == ([""] if notifies else [])


@pytest.mark.parametrize(("address", "ours", "local", "remote"), [
    (USER, True, [USER], []),
    ("User@Local.Example", True, [USER], []),
    (f"team@{LOCAL}", True, [USER], ["friend@far.example"]),
    (f"user+tag@{LOCAL}", True, [USER], []),
    (f"nobody@{LOCAL}", True, [], []),
    ("someone@far.example", False, [], []),
])
async def test_known_answers_come_from_memory(seeded: asyncpg.Pool, dead_pool: asyncpg.Pool, cache: RouteCache,
                                              address: str, ours: bool, local: list[str], remote: list[str]) -> None:
    ids = {r["id"]: r["address"] for r in await seeded.fetch("SELECT id, address FROM accounts")}
    addr = parse_address(address)
    first, full = await cache.route(seeded, addr)
    again, _ = await cache.route(dead_pool, addr)  # nothing listens there: any query would fail
    assert again == first
    assert (first.ours, [ids[a] for a, _ in first.local], list(first.remote), full) == (ours, local, remote, [])
    assert (cache.hits, cache.misses) == (1, 1)


async def test_foreign_domain_is_known_for_every_local_part(seeded: asyncpg.Pool, dead_pool: asyncpg.Pool,
                                                            cache: RouteCache) -> None:
    await cache.route(seeded, parse_address("one@far.example"))
    routing, _ = await cache.route(dead_pool, parse_address("two@far.example"))
    assert not routing.ours


async def test_quota_is_asked_each_time(seeded: asyncpg.Pool, dead_pool: asyncpg.Pool, cache: RouteCache) -> None:
    """An account with a quota is routed from memory, but how full it is comes from the database."""
    addr = parse_address(LIMITED)
    assert (await cache.route(seeded, addr, 20_000))[1] != []  # would overflow the quota
    assert (await cache.route(seeded, addr, 100))[1] == []
    generation = cache.generation
    await seeded.execute("UPDATE accounts SET used_bytes = 10000 WHERE address = $1", LIMITED)
    assert (await cache.route(seeded, addr, 0))[1] != []
    assert (cache.hits, cache.generation) == (2, generation)
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await cache.route(dead_pool, addr)


async def test_unknown_addresses_do_not_push_known_ones_out(seeded: asyncpg.Pool, dead_pool: asyncpg.Pool,
                                                            cache: RouteCache) -> None:
    """A dictionary attack fills the cache of unknown addresses (capacity 3 here), not the known ones'."""
    await cache.route(seeded, parse_address(USER))
    for n in range(10):
        await cache.route(seeded, parse_address(f"guess{n}@{LOCAL}"))
    assert len(cache) == 1 + 3
    assert (await cache.route(dead_pool, parse_address(USER)))[0].local
    assert not (await cache.route(dead_pool, parse_address(f"guess9@{LOCAL}")))[0].local
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await cache.route(dead_pool, parse_address(f"guess0@{LOCAL}"))  # the oldest went


async def test_not_listening_means_not_cached(seeded: asyncpg.Pool, db_dsn: str) -> None:
    """Before its LISTEN is in place the cache is bypassed: nothing is kept, every answer is read."""
    routes = RouteCache(db_dsn)  # never started
    for _ in range(2):
        routing, _ = await routes.route(seeded, parse_address(USER))
        assert routing.local
    assert (len(routes), routes.hits, routes.misses) == (0, 0, 2)


class ReadBeforeChange:
    """A connection whose read of a route returns only after `change` has committed and its NOTIFY has
    emptied `cache`: the race of a RCPT's read against an admin's commit, made certain."""

    def __init__(self, pool: asyncpg.Pool, cache: RouteCache, change: str) -> None:
        self.pool = pool
        self.cache = cache
        self.change = change

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        row = await self.pool.fetchrow(query, *args)
        generation = self.cache.generation
        await self.pool.execute(self.change)
        await until(lambda: self.cache.generation > generation)
        return row


async def test_an_answer_read_across_a_change_is_not_kept(seeded: asyncpg.Pool, cache: RouteCache) -> None:
    """The answer in flight may be the old one (as it would be a moment earlier), but it must not be
    stored, or it would outlive the notification that was meant to remove it."""
    addr = parse_address(USER)
    racing = ReadBeforeChange(seeded, cache, f"UPDATE accounts SET disabled = true WHERE address = '{USER}'")
    routing, _ = await cache.route(racing, addr)  # type: ignore[arg-type]
    assert routing.local and len(cache) == 0
    assert not (await cache.route(seeded, addr))[0].local
