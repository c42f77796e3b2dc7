"""Domains, accounts, aliases and recipient routing against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from mailcore.address import parse_address
from mailcore.passwords import hash_password_sync, verify_password
from storage import accounts
from storage.accounts import StoreError

HASH = hash_password_sync("password1")


@pytest.fixture
async def world(pool: asyncpg.Pool) -> dict[str, int]:
    """Two domains, three accounts, aliases of every kind."""
    await accounts.add_domain(pool, "d.example")
    await accounts.add_domain(pool, "other.example")
    ids = {a: await accounts.add_account(pool, a, HASH)
           for a in ("alice@d.example", "bob@d.example", "carol@other.example")}
    await accounts.add_alias(pool, "team@d.example", ["alice@d.example", "bob@d.example", "x@far.example"])
    await accounts.add_alias(pool, "chain@d.example", ["team@d.example"])
    await accounts.add_alias(pool, "@other.example", ["carol@other.example"])
    await accounts.add_alias(pool, "loop1@d.example", ["loop2@d.example"])
    await accounts.add_alias(pool, "loop2@d.example", ["loop1@d.example"])
    return ids


@pytest.mark.parametrize(("rcpt", "local", "remote"), [
    ("alice@d.example", ["alice@d.example"], []),
    ("Alice@D.Example", ["alice@d.example"], []),
    ("alice+news@d.example", ["alice@d.example"], []),
    ("team@d.example", ["alice@d.example", "bob@d.example"], ["x@far.example"]),
    ("chain@d.example", ["alice@d.example", "bob@d.example"], ["x@far.example"]),
    ("anything@other.example", ["carol@other.example"], []),
    ("nobody@d.example", [], []),
    ("loop1@d.example", [], []),
])
async def test_routing(pool: asyncpg.Pool, world: dict[str, int], rcpt: str, local: list[str],
                       remote: list[str]) -> None:
    route = await accounts.resolve_recipient(pool, parse_address(rcpt))
    assert sorted(aid for aid, _ in route.local) == sorted(world[a] for a in local)
    assert route.remote == remote


async def test_postmaster_routes_to_configured_account(pool: asyncpg.Pool, world: dict[str, int]) -> None:
    route = await accounts.resolve_recipient(pool, parse_address("PostMaster@other.example"), "bob@d.example")
    assert route.local == [(world["bob@d.example"], "postmaster@other.example")]


async def test_account_gets_default_mailboxes(pool: asyncpg.Pool, world: dict[str, int]) -> None:
    rows = await pool.fetch("SELECT name, special_use FROM mailboxes WHERE account_id=$1 ORDER BY id",
                            world["alice@d.example"])
    assert [(r["name"], r["special_use"]) for r in rows] == list(accounts.DEFAULT_MAILBOXES)
    validities = await pool.fetch("SELECT uidvalidity FROM mailboxes")
    assert len({r["uidvalidity"] for r in validities}) == len(validities)


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: accounts.add_account(p, "x@unknown.example", HASH), "unknown domain"),
    (lambda p: accounts.add_account(p, "alice@d.example", HASH), "already exists"),
    (lambda p: accounts.add_account(p, "not an address", HASH), "invalid address"),
    (lambda p: accounts.add_account(p, "team@d.example", HASH), "already an alias"),
    (lambda p: accounts.add_alias(p, "alice@d.example", ["bob@d.example"]), "is an account"),
    (lambda p: accounts.add_domain(p, "d.example"), "already exists"),
    (lambda p: accounts.remove_domain(p, "d.example"), "still has accounts"),
    (lambda p: accounts.remove_domain(p, "nope.example"), "no such domain"),
    (lambda p: accounts.remove_account(p, "nope@d.example"), "no such account"),
    (lambda p: accounts.set_quota(p, "nope@d.example", 5), "no such account"),
    (lambda p: accounts.remove_alias(p, "nope@d.example"), "no such alias"),
])
async def test_refusals(pool: asyncpg.Pool, world: dict[str, int], call, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await call(pool)


async def test_password_and_removal(pool: asyncpg.Pool, world: dict[str, int]) -> None:
    await accounts.set_password(pool, "alice@d.example", hash_password_sync("new-password"))
    acct = await accounts.get_account(pool, "ALICE@d.example")
    assert acct is not None and await verify_password(acct.password_hash, "new-password")
    assert not await verify_password(acct.password_hash, "password1")
    assert not await verify_password(None, "anything")
    await accounts.remove_account(pool, "alice@d.example")
    assert await accounts.get_account(pool, "alice@d.example") is None
