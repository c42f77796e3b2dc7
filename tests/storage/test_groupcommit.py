"""Group commit of local deliveries against a real PostgreSQL: concurrent deliveries share transactions,
yet every message gets exactly what a commit of its own would have given it, and one bad message
cannot fail the others."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from mailcore.passwords import hash_password_sync
from storage import accounts
from storage.delivery import Delivery, LocalRecipient, RemoteRecipient

HASH = hash_password_sync("pw")


def _message(i: int) -> bytes:
    return f"From: a@remote.example\r\nTo: u@d.example\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode()


async def _setup(pool: asyncpg.Pool, count: int) -> list[int]:
    await accounts.add_domain(pool, "d.example")
    return [await accounts.add_account(pool, f"u{i}@d.example", HASH) for i in range(count)]


async def _deliver(pool: asyncpg.Pool, targets: list[tuple[int, str]], i: int, *, sent_via: str | None = None,
                   summary: object = None):
    raw = _message(i)
    d = Delivery(sender="a@remote.example", account_id=targets[0][0] if sent_via else None, sent_via=sent_via,
                 sent_recipients=[f"r{i}@d.example", "other@far.example"] if sent_via else [])
    for account_id, mailbox in targets:
        d.add_local(LocalRecipient(account_id, f"r{i}@d.example", mailbox))
    return await d.commit(pool, raw, summary if summary is not None else summarize(raw))


async def _assert_mailboxes_consistent(pool: asyncpg.Pool) -> None:
    """Per mailbox: UIDs 1..n without gap or repeat, uidnext n+1, modseqs distinct and at most
    highestmodseq, as one delivery at a time would leave them."""
    boxes = await pool.fetch("SELECT id, uidnext, highestmodseq FROM mailboxes")
    for box in boxes:
        rows = await pool.fetch("SELECT uid, modseq FROM mailbox_messages WHERE mailbox_id = $1 ORDER BY uid",
                                box["id"])
        assert [r["uid"] for r in rows] == list(range(1, len(rows) + 1))
        assert box["uidnext"] == len(rows) + 1
        modseqs = [r["modseq"] for r in rows]
        assert modseqs == sorted(set(modseqs))
        assert all(m <= box["highestmodseq"] for m in modseqs)


async def test_concurrent_deliveries_share_commits_and_keep_uids_exact(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool, 5)
    plans = [[(ids[i % 5], "INBOX"), (ids[(i + 1) % 5], "Junk")] for i in range(60)]
    results = await asyncio.gather(*[_deliver(pool, plan, i) for i, plan in enumerate(plans)])
    # Rows written by one transaction share its xmin: fewer transactions than messages is the batching.
    transactions = await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM messages")
    assert await pool.fetchval("SELECT count(*) FROM messages") == 60
    assert transactions < 60
    await _assert_mailboxes_consistent(pool)
    for i, stored in enumerate(results):
        assert len(stored.entries) == 2
        subject = await pool.fetchval("SELECT subject FROM messages WHERE id = $1", stored.message_id)
        assert subject == f"m{i}"
        for mailbox_id, uid in stored.entries:
            assert await pool.fetchval("SELECT message_id FROM mailbox_messages WHERE mailbox_id = $1 AND uid = $2",
                                       mailbox_id, uid) == stored.message_id
    sizes = {i: 0 for i in ids}
    for i, plan in enumerate(plans):
        for account_id, _ in plan:
            sizes[account_id] += len(_message(i))
    for account_id, used in sizes.items():
        assert await pool.fetchval("SELECT used_bytes FROM accounts WHERE id = $1", account_id) == used
    assert await pool.fetchval("SELECT count(*) FROM delivery_log WHERE event = 'delivered'") == 120


async def test_account_without_mailboxes_fails_only_its_message(pool: asyncpg.Pool) -> None:
    good, bad = await _setup(pool, 2)
    await pool.execute("DELETE FROM mailboxes WHERE account_id = $1", bad)
    plans = [[(good, "INBOX")] if i % 4 else [(good, "INBOX"), (bad, "INBOX")] for i in range(20)]
    results = await asyncio.gather(*[_deliver(pool, plan, i) for i, plan in enumerate(plans)],
                                   return_exceptions=True)
    for i, result in enumerate(results):
        if i % 4:
            assert not isinstance(result, BaseException), result
        else:
            assert isinstance(result, LookupError)
    # The failed messages left nothing: not their row, not the entry for the good account either.
    assert await pool.fetchval("SELECT count(*) FROM messages") == 15
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == 15
    assert await pool.fetchval("SELECT count(*) FROM delivery_log") == 15
    await _assert_mailboxes_consistent(pool)


async def test_a_message_that_breaks_the_statement_fails_alone(pool: asyncpg.Pool) -> None:
    (aid,) = await _setup(pool, 1)
    broken = dataclasses.replace(summarize(_message(0)), sent_date="not a timestamp")
    tasks = [_deliver(pool, [(aid, "INBOX")], i, summary=broken if i == 7 else None) for i in range(20)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[7], Exception)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 7)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 19
    await _assert_mailboxes_consistent(pool)


async def test_sent_records_in_a_batch(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool, 3)
    results = await asyncio.gather(*[_deliver(pool, [(ids[i % 3], "INBOX")], i, sent_via="smtp" if i % 2 else None)
                                     for i in range(30)])
    rows = await pool.fetch("SELECT account_id, message_id, via, recipients FROM sent_messages ORDER BY message_id")
    expected = sorted((ids[i % 3], results[i].message_id) for i in range(30) if i % 2)
    assert sorted((r["account_id"], r["message_id"]) for r in rows) == expected
    by_message = {r["message_id"]: r for r in rows}
    for i in range(1, 30, 2):
        row = by_message[results[i].message_id]
        assert row["via"] == "smtp"
        assert row["recipients"] == [f"r{i}@d.example", "other@far.example"]


async def test_two_instances_delivering_crosswise_do_not_deadlock(pool: asyncpg.Pool, db_dsn: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Two pools stand for two server instances on one database: their batches touch the same mailboxes
    in different orders, and the commit's lock ordering must keep them from deadlocking. (A deadlock
    would not lose mail, the batch is retried message by message, but it must not happen: no batch
    may fail.)"""
    caplog.set_level(logging.WARNING, logger="storage.groupcommit")
    ids = await _setup(pool, 6)
    other = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    try:
        rng = random.Random(8)
        plans = [[(a, "INBOX") for a in rng.sample(ids, 3)] for _ in range(120)]
        tasks = [_deliver(pool if i % 2 else other, plan, i) for i, plan in enumerate(plans)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await other.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.name == "storage.groupcommit"] == []
    assert await pool.fetchval("SELECT count(*) FROM mailbox_messages") == 360
    await _assert_mailboxes_consistent(pool)


@pytest.mark.parametrize("mailbox", ["INBOX", "Junk", "NoSuchBox"])
async def test_one_delivery_alone_goes_where_it_should(pool: asyncpg.Pool, mailbox: str) -> None:
    (aid,) = await _setup(pool, 1)
    stored = await _deliver(pool, [(aid, mailbox)], 1)
    name = await pool.fetchval("SELECT name FROM mailboxes WHERE id = $1", stored.entries[0][0])
    assert name == ("INBOX" if mailbox == "NoSuchBox" else mailbox)
    assert stored.entries[0][1] == 1


async def _queue(pool: asyncpg.Pool, i: int, account_id: int, *, sent: bool) -> object:
    raw = _message(i)
    d = Delivery(sender=f"s{i}@d.example", account_id=account_id, envid=f"env{i}", ret="HDRS" if i % 2 else None,
                 sent_via="smtp" if sent else None, sent_recipients=[f"x{i}@far.example"] if sent else [])
    for k in range(1 + i % 3):
        d.add_remote(RemoteRecipient(f"r{i}.{k}@far{k}.example", notify="FAILURE" if k else None,
                                     orcpt=f"rfc822;r{i}.{k}@far{k}.example" if k == 2 else None))
    return await d.commit(pool, raw, summarize(raw))


async def test_concurrent_remote_only_messages_are_queued_together(pool: asyncpg.Pool) -> None:
    (aid,) = await _setup(pool, 1)
    results = await asyncio.gather(*[_queue(pool, i, aid, sent=i % 4 == 0) for i in range(40)],
                                   _deliver(pool, [(aid, "INBOX")], 99))
    queued = results[:40]
    assert await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM queue") < 40
    for i, stored in enumerate(queued):
        row = await pool.fetchrow("SELECT message_id, sender, account_id, envid, ret FROM queue WHERE id = $1",
                                  stored.queue_id)
        assert dict(row) == {"message_id": stored.message_id, "sender": f"s{i}@d.example", "account_id": aid,
                             "envid": f"env{i}", "ret": "HDRS" if i % 2 else None}
        assert await pool.fetchval("SELECT subject FROM messages WHERE id = $1", stored.message_id) == f"m{i}"
        rcpts = await pool.fetch("SELECT recipient, domain, notify, orcpt FROM queue_recipients WHERE queue_id = $1"
                                 " ORDER BY id", stored.queue_id)
        assert [tuple(r) for r in rcpts] == [
            (f"r{i}.{k}@far{k}.example", f"far{k}.example", "FAILURE" if k else None,
             f"rfc822;r{i}.{k}@far{k}.example" if k == 2 else None) for k in range(1 + i % 3)]
        logged = await pool.fetch("SELECT recipient FROM delivery_log WHERE queue_id = $1 AND event = 'queued'"
                                  " AND message_id = $2 ORDER BY id", stored.queue_id, stored.message_id)
        assert [r["recipient"] for r in logged] == [r["recipient"] for r in rcpts]
        sent = await pool.fetchval("SELECT recipients FROM sent_messages WHERE message_id = $1", stored.message_id)
        assert sent == ([f"x{i}@far.example"] if i % 4 == 0 else None)


@pytest.mark.parametrize("steps", [0, 1])
async def test_cancelled_drains_leave_no_caller_waiting(pool: asyncpg.Pool, steps: int) -> None:
    """The loop shutting down cancels the commits' tasks, before they start (steps=0) or while their
    statement runs (steps=1): every caller must end (stored, or cancelled: no 250), none wait forever,
    and the group is dropped."""
    from storage import groupcommit

    (aid,) = await _setup(pool, 1)
    callers = [asyncio.create_task(_deliver(pool, [(aid, "INBOX")], i)) for i in range(10)]
    for _ in range(1 + steps):
        await asyncio.sleep(0)  # every caller queued; with steps=1 the drains have sent their statements
    groups = [g for (p, _), g in groupcommit._groups.items() if p is pool]
    assert len(groups) == 1 and groups[0].tasks
    for task in list(groups[0].tasks):
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 60)
    assert all(isinstance(r, asyncio.CancelledError) or hasattr(r, "message_id") for r in results), results
    assert any(isinstance(r, asyncio.CancelledError) for r in results)
    assert not [g for (p, _), g in groupcommit._groups.items() if p is pool]
    # What did commit is whole: every stored message has its entry, and the UIDs have no gap.
    await _assert_mailboxes_consistent(pool)
    assert await pool.fetchval("SELECT count(*) FROM messages") == await pool.fetchval(
        "SELECT count(*) FROM mailbox_messages")
