"""The quota at delivery against a real PostgreSQL: checked with the message's real size in the statement
that counts it (so concurrent deliveries cannot both slip under the quota), per account, and without
failing the other messages of a group commit."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from mailcore.address import parse_address
from mailcore.mime.precompute import summarize
from mailcore.passwords import hash_password_sync
from storage import accounts
from storage.delivery import (
    Delivery,
    LocalBatchItem,
    LocalRecipient,
    OverQuota,
    RemoteRecipient,
    commit_notice,
    commit_quota_batch,
    message_values,
    trace_prefix,
)

HASH = hash_password_sync("pw")


def _message(i: int, pad: int = 0) -> bytes:
    return f"From: a@remote.example\r\nSubject: m{i:04d}\r\n\r\nbody{'x' * pad}\r\n".encode()


SIZE = len(_message(0))


async def _setup(pool: asyncpg.Pool, *quotas: tuple[int, int] | None) -> list[int]:
    """One account per entry: (quota, used) or None for no quota."""
    await accounts.add_domain(pool, "d.example")
    ids = []
    for n, quota in enumerate(quotas):
        ids.append(await accounts.add_account(pool, f"u{n}@d.example", HASH))
        if quota is not None:
            await pool.execute("UPDATE accounts SET quota_bytes = $2, used_bytes = $3 WHERE id = $1", ids[-1], *quota)
    return ids


async def _deliver(pool: asyncpg.Pool | asyncpg.Connection, local: list[int], i: int = 0, *,
                   remote: list[str] = (), pad: int = 0):
    raw = _message(i, pad)
    d = Delivery(sender="a@remote.example")
    for account_id in local:
        d.add_local(LocalRecipient(account_id, f"u{account_id}@d.example"))
    for address in remote:
        d.add_remote(RemoteRecipient(address))
    return await d.commit(pool, raw, summarize(raw))


async def _used(pool: asyncpg.Pool, account_id: int) -> int:
    return await pool.fetchval("SELECT used_bytes FROM accounts WHERE id = $1", account_id)


@pytest.mark.parametrize(("quota", "used", "stored"), [
    (SIZE, 0, True),  # exactly full afterwards: allowed, as APPEND allows it
    (SIZE - 1, 0, False),
    (10 * SIZE, 9 * SIZE + 1, False),
    (10 * SIZE, 10 * SIZE, False),
    (10 * SIZE, 11 * SIZE, False),  # over already (quota lowered)
])
@pytest.mark.parametrize("alone", [True, False])  # through the group commit, or on a connection
async def test_one_message_against_the_quota(pool: asyncpg.Pool, quota: int, used: int, stored: bool,
                                             alone: bool) -> None:
    (aid,) = await _setup(pool, (quota, used))
    if alone:
        async with pool.acquire() as conn, conn.transaction():
            outcome = await asyncio.gather(_deliver(conn, [aid]), return_exceptions=True)
    else:
        outcome = await asyncio.gather(_deliver(pool, [aid]), return_exceptions=True)
    if stored:
        assert outcome[0].entries and outcome[0].over_quota == []
        assert await _used(pool, aid) == used + SIZE
    else:
        assert isinstance(outcome[0], OverQuota)
        assert [r.account_id for r in outcome[0].recipients] == [aid]
        assert await _used(pool, aid) == used
        for table in ("messages", "mailbox_messages", "delivery_log"):
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table


@pytest.mark.parametrize("remote", [[], ["x@far.example"]])  # group commit; a transaction each (`_commit_on`)
async def test_concurrent_deliveries_fill_the_quota_exactly(pool: asyncpg.Pool, db_dsn: str, remote: list[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Forty messages from two pools (two server instances) for room for ten: ten stored, whatever the
    batches and the interleaving; and no batch fails for it (no retry one by one)."""
    caplog.set_level(logging.WARNING, logger="storage.groupcommit")
    (aid,) = await _setup(pool, (10 * SIZE, 0))
    other = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    try:
        results = await asyncio.gather(*[_deliver(pool if i % 2 else other, [aid], i, remote=remote)
                                         for i in range(40)], return_exceptions=True)
    finally:
        await other.close()
    assert [r for r in results if isinstance(r, BaseException) and not isinstance(r, OverQuota)] == []
    refused = [r for r in results if isinstance(r, OverQuota) or r.over_quota]
    assert len(refused) == 30
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == 10
    assert await _used(pool, aid) == 10 * SIZE
    assert await pool.fetchval("SELECT uidnext FROM mailboxes WHERE account_id = $1 AND name = 'INBOX'", aid) == 11
    assert [r.getMessage() for r in caplog.records if r.name == "storage.groupcommit"] == []


async def test_a_full_account_fails_only_its_own_messages(pool: asyncpg.Pool) -> None:
    full, roomy, unlimited = await _setup(pool, (SIZE, SIZE), (100 * SIZE, 0), None)
    plans = [[full] if i % 3 == 0 else [roomy] if i % 3 == 1 else [unlimited] for i in range(30)]
    results = await asyncio.gather(*[_deliver(pool, plan, i) for i, plan in enumerate(plans)],
                                   return_exceptions=True)
    for plan, result in zip(plans, results, strict=True):
        assert isinstance(result, OverQuota) == (plan == [full]), result
    assert await _used(pool, full) == SIZE
    assert await _used(pool, roomy) == 10 * SIZE
    assert await pool.fetchval("SELECT count(*) FROM messages") == 20


async def test_some_recipients_full_the_others_get_it(pool: asyncpg.Pool) -> None:
    full, roomy, unlimited = await _setup(pool, (SIZE, SIZE), (100 * SIZE, 0), None)
    stored = await _deliver(pool, [full, roomy, unlimited])
    assert [r.account_id for r in stored.over_quota] == [full]
    boxes = [await pool.fetchval("SELECT account_id FROM mailboxes WHERE id = $1", box) for box, _ in stored.entries]
    assert sorted(boxes) == sorted([roomy, unlimited])
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == 2
    assert (await _used(pool, full), await _used(pool, roomy)) == (SIZE, SIZE)
    assert await pool.fetchval("SELECT accounts FROM messages") == sorted([roomy, unlimited])
    log = await pool.fetch("SELECT recipient FROM delivery_log ORDER BY id")
    assert [r["recipient"] for r in log] == [f"u{roomy}@d.example", f"u{unlimited}@d.example"]


async def test_local_full_and_remote_recipients_queue_the_remote_ones(pool: asyncpg.Pool) -> None:
    (full,) = await _setup(pool, (SIZE, SIZE))
    stored = await _deliver(pool, [full], remote=["x@far.example"])
    assert stored.entries == [] and stored.queue_id is not None
    assert [r.account_id for r in stored.over_quota] == [full]
    assert await _used(pool, full) == SIZE
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == 0
    assert await pool.fetchval("SELECT recipient FROM queue_recipients") == "x@far.example"


async def test_a_batch_takes_each_message_that_still_fits_in_order(pool: asyncpg.Pool) -> None:
    """Room for one small message: a big one first in the batch is refused, the small one after it is
    stored, the next small one refused: what one commit after another would have done."""
    (aid,) = await _setup(pool, (SIZE + 10, 0))
    raws = [_message(1, pad=50), _message(2), _message(3)]
    items = [LocalBatchItem(values=message_values(raw, summarize(raw)), sent=(None, None, None),
                            entries=[(aid, "INBOX", trace_prefix("a@remote.example", "u@d.example"), "u@d.example")])
             for raw in raws]
    outcomes = await commit_quota_batch(pool, items)
    assert [(bool(placed), refused) for placed, refused in outcomes] == [(False, [aid]), (True, []), (False, [aid])]
    assert await _used(pool, aid) == SIZE
    assert await pool.fetchval("SELECT subject FROM messages") == "m0002"


async def test_an_account_without_a_quota_known_as_such_is_not_checked(pool: asyncpg.Pool) -> None:
    """`unlimited` is the caller's word (its routing said the account has no quota): the delivery takes
    the statement without the quota check, even if a quota was set since."""
    (aid,) = await _setup(pool, (1, 0))
    raw = _message(0)
    d = Delivery(sender="a@remote.example")
    d.add_local(LocalRecipient(aid, "u@d.example", unlimited=True))
    stored = await d.commit(pool, raw, summarize(raw))
    assert stored.entries and await _used(pool, aid) == SIZE


@pytest.mark.parametrize(("used", "stored"), [(0, True), (SIZE, False)])
async def test_a_notice_for_a_full_local_sender_is_dropped(pool: asyncpg.Pool, used: int, stored: bool) -> None:
    """A DSN is not bounced in turn: one for a sender whose mailbox is full is dropped (False), as Postfix
    drops an undeliverable bounce; with room it is stored with the null reverse-path."""
    (aid,) = await _setup(pool, (SIZE, used))
    raw = _message(0)
    async with pool.acquire() as conn, conn.transaction():  # as the queue worker commits its DSNs
        assert await commit_notice(conn, parse_address("u0@d.example"), raw, summarize(raw)) is stored
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == int(stored)
    assert await _used(pool, aid) == used + (SIZE if stored else 0)
    if stored:
        assert (await pool.fetchval("SELECT header_prefix FROM mailbox_messages")).startswith(b"Return-Path: <>")
