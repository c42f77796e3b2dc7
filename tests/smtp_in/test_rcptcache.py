"""RCPT answered from the routing cache (storage.routecache) over real sockets and a real PostgreSQL: a
change made through another pool, as another instance or the CLI would, holds for the next RCPT once
its NOTIFY is in; a full account gets 452 although its route is cached; and while the cache's LISTEN
connection is down (never up, reset, or silent) every answer comes from the database."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from mailcore import replies
from storage import accounts
from storage.routecache import RouteCache
from tests.smtp_in.harness import HASH, LOCAL, OTHER, USER, RawClient, Server, make_settings, start_server
from tests.smtp_in.test_mx import code, parsed
from tests.smtp_out.conftest import until
from tests.tcpgate import TcpGate

OK, UNKNOWN, RELAY = replies.RECIPIENT_OK, replies.MAILBOX_UNAVAILABLE, replies.RELAY_DENIED
Change = Callable[[asyncpg.Pool], Awaitable[object]]


async def rcpt(port: int, address: str, size: int | None = None) -> tuple[int, str]:
    """(code, enhanced code) of RCPT TO:<address> in a transaction of its own on the MX at `port`."""
    client = await RawClient.connect(port)
    try:
        await client.cmd("EHLO client.remote.example")
        await client.cmd("MAIL FROM:<a@remote.example>" + (f" SIZE={size}" if size else ""))
        return parsed((await client.cmd(f"RCPT TO:<{address}>"))[1])
    finally:
        await client.close()


async def cached(server: Server, routes: RouteCache, address: str) -> tuple[int, str]:
    """RCPT twice: the answer, after checking that the second came from the cache."""
    first = await rcpt(server.port("mx"), address)
    hits = routes.hits
    assert await rcpt(server.port("mx"), address) == first
    assert routes.hits == hits + 1
    return first


async def changed(routes: RouteCache, admin: asyncpg.Pool, change: Change) -> None:
    """Make `change` with the storage functions the CLI uses, and wait for its NOTIFY: nothing but the
    notification tells the cache (the CLI, or another instance, would be another process)."""
    generation = routes.generation
    await change(admin)
    await until(lambda: routes.generation > generation)


@pytest.fixture
async def gate(db_dsn: str) -> AsyncIterator[TcpGate]:
    """A gate in front of the test database: its TCP address (CI's server), or the Unix socket that
    `?host=/dir` names (the embedded server, which listens on nothing else)."""
    parts = urlsplit(db_dsn)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or 5432
    unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
    g = await TcpGate(parts.hostname or "127.0.0.1", port, unix_path=unix).start()
    yield g
    await g.close()


def through(dsn: str, gate: TcpGate) -> str:
    """`dsn` reaching its database through `gate` (TCP on loopback; a socket directory is dropped)."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username}@127.0.0.1:{gate.port}" if parts.username else f"127.0.0.1:{gate.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@pytest.fixture
async def routes(db_dsn: str, gate: TcpGate) -> AsyncIterator[RouteCache]:
    """The cache, to listen through `gate` once started; a short ping finds a silent connection quickly."""
    cache = RouteCache(through(db_dsn, gate), reconnect_delay=0.05, ping_interval=0.2)
    yield cache
    await cache.stop()


async def listening(routes: RouteCache) -> None:
    await routes.start()
    await asyncio.wait_for(routes.wait_listening(), 10)


@pytest.fixture
async def admin(pool: asyncpg.Pool) -> asyncpg.Pool:
    """Where changes are made from: any connection but the cache's own."""
    return pool


@pytest.fixture
async def mx(pool: asyncpg.Pool, accounts_ids: dict[str, int], server_tls: ssl.SSLContext, tmp_path: Path,
             routes: RouteCache) -> AsyncIterator[Server]:
    srv = await start_server(pool, make_settings(tmp_path), server_tls, routes=routes)
    yield srv
    await srv.stop()


def disabled(address: str, value: bool) -> Change:
    return lambda admin: admin.execute("UPDATE accounts SET disabled = $2 WHERE address = $1", address, value)


def domain(name: str, present: bool) -> Change:
    return lambda admin: (accounts.add_domain if present else accounts.remove_domain)(admin, name)


# Each change is one storage call, one transaction: one NOTIFY, so that `changed` has waited for all of it.
@pytest.mark.parametrize(("address", "before", "change", "after", "undo"), [
    (USER, OK, disabled(USER, True), UNKNOWN, disabled(USER, False)),
    (OTHER, OK, lambda a: accounts.remove_account(a, OTHER), UNKNOWN, lambda a: accounts.add_account(a, OTHER, HASH)),
    (f"new@{LOCAL}", UNKNOWN, lambda a: accounts.add_alias(a, f"new@{LOCAL}", [USER]), OK,
     lambda a: accounts.remove_alias(a, f"new@{LOCAL}")),
    ("anyone@spare.example", UNKNOWN, domain("spare.example", False), RELAY, domain("spare.example", True)),
    ("anyone@fresh.example", RELAY, domain("fresh.example", True), UNKNOWN, domain("fresh.example", False)),
], ids=["account disabled", "account removed", "alias added", "domain removed", "domain added"])
async def test_a_change_anywhere_holds_for_the_next_rcpt(mx: Server, routes: RouteCache, admin: asyncpg.Pool,
                                                         address: str, before: replies.Reply, change: Change,
                                                         after: replies.Reply, undo: Change) -> None:
    await accounts.add_domain(admin, "spare.example")
    await listening(routes)
    assert await cached(mx, routes, address) == code(before)
    await changed(routes, admin, change)
    assert await cached(mx, routes, address) == code(after)
    await changed(routes, admin, undo)
    assert await cached(mx, routes, address) == code(before)


async def test_full_account_gets_452_though_its_route_is_cached(mx: Server, routes: RouteCache,
                                                                admin: asyncpg.Pool) -> None:
    await listening(routes)
    await changed(routes, admin, lambda a: accounts.set_quota(a, USER, 1000))
    assert await cached(mx, routes, USER) == code(OK)
    assert await rcpt(mx.port("mx"), USER, size=2000) == code(replies.MAILBOX_FULL)  # the SIZE= hint counts too
    generation = routes.generation
    client = await RawClient.connect(mx.port("mx"))
    for line in ("EHLO client.remote.example", "MAIL FROM:<a@remote.example>", f"RCPT TO:<{USER}>", "DATA"):
        await client.cmd(line)
    # About 800 bytes stored (Received included): within the quota, which the end of DATA checks now.
    assert (await client.cmd("Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 8 + "."))[0] == 250
    await client.close()
    hits = routes.hits
    assert await rcpt(mx.port("mx"), USER, size=300) == code(replies.MAILBOX_FULL)  # 0 + 300 would fit
    # Still the cached route, not emptied by the delivery's used_bytes update (migration 0011).
    assert (routes.hits, routes.generation) == (hits + 1, generation)


@pytest.mark.parametrize("how", ["never up", "reset", "silent"])
async def test_listener_down_means_answers_from_the_database(mx: Server, routes: RouteCache, gate: TcpGate,
                                                             admin: asyncpg.Pool, how: str) -> None:
    """A NOTIFY sent while the cache cannot hear it must not leave a stale answer: disable an account
    while the LISTEN connection is down, and RCPT is refused at once; up again, the cache serves."""
    if how == "never up":
        gate.cut()
        await routes.start()
    else:
        await listening(routes)
        assert await cached(mx, routes, USER) == code(OK)
        if how == "reset":
            gate.cut()
        else:
            gate.freeze()
        await until(lambda: not routes.listening)
    await disabled(USER, True)(admin)
    assert await rcpt(mx.port("mx"), USER) == code(UNKNOWN)
    assert await rcpt(mx.port("mx"), OTHER) == code(OK)
    assert len(routes) == 0
    gate.open()
    await asyncio.wait_for(routes.wait_listening(), 10)
    assert await cached(mx, routes, USER) == code(UNKNOWN)
    await changed(routes, admin, disabled(USER, False))
    assert await cached(mx, routes, USER) == code(OK)
