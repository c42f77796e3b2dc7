"""The queue's worker statements against a real PostgreSQL: batched claims and batched records, fenced by
the lease (storage/queue.py)."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from mailcore.mime.precompute import summarize
from storage import queue as store
from storage.delivery import Delivery, LocalRecipient, RemoteRecipient
from storage.queue import Attempt, Outcome

MSG = b"From: a@ours.example\r\nTo: r@far.example\r\nSubject: hi\r\n\r\nbody\r\n"
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(seconds=600)


async def _queue(pool: asyncpg.Pool, *recipients: str, local: int | None = None) -> int:
    d = Delivery(sender="a@ours.example")
    for r in recipients:
        d.add_remote(RemoteRecipient(r))
    if local is not None:
        d.add_local(LocalRecipient(local, "u@ours.example"))
    stored = await d.commit(pool, MSG, summarize(MSG))
    assert stored.queue_id is not None
    return stored.queue_id


def _ok(rid: int) -> Outcome:
    return Outcome(rid, "delivered", "250 2.0.0 ok", "2.0.0", "sink.test")


def _later(rid: int) -> Outcome:
    return Outcome(rid, "deferred", "451 4.3.0 try later", "4.3.0", "sink.test")


async def test_one_claim_leases_a_batch_with_messages_and_recipients(pool: asyncpg.Pool) -> None:
    ids = [await _queue(pool, f"r{i}@far.example", f"s{i}@far.example") for i in range(5)]
    claimed = await store.claim(pool, "w1", NOW, 60, limit=3)
    assert [e.id for e in claimed] == ids[:3]
    assert all(e.raw == MSG and [r.recipient for r in e.recipients] == [f"r{i}@far.example", f"s{i}@far.example"]
               for i, e in enumerate(claimed))
    assert [e.id for e in await store.claim(pool, "w2", NOW, 60, limit=10)] == ids[3:]  # the rest, not those
    assert await store.claim(pool, "w3", NOW, 60, limit=10) == []


async def test_record_many_finishes_reschedules_and_skips_entries_taken_over(pool: asyncpg.Pool) -> None:
    done, partly, taken = (await _queue(pool, "a@far.example"), await _queue(pool, "b@far.example", "c@far.example"),
                           await _queue(pool, "d@far.example"))
    entries = {e.id: e for e in await store.claim(pool, "w1", NOW, 60, limit=3)}
    await pool.execute("UPDATE queue SET lease_owner = 'w2' WHERE id = $1", taken)  # w1's lease ran out
    b, c = entries[partly].recipients
    held = await store.record_many(pool, "w1", [
        Attempt(done, [_ok(entries[done].recipients[0].id)], NOW, LATER),
        Attempt(partly, [_ok(b.id), _later(c.id)], NOW, LATER),
        Attempt(taken, [_ok(entries[taken].recipients[0].id)], NOW, LATER),
    ])
    assert held == {done, partly}
    # finished: the entry and its message are gone, the history stays
    assert await pool.fetchval("SELECT count(*) FROM queue WHERE id = $1", done) == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", entries[done].message_id) == 0
    # one deferred recipient: rescheduled, lease released, the error kept
    row = await pool.fetchrow("SELECT * FROM queue WHERE id = $1", partly)
    assert (row["next_attempt"], row["lease_owner"], row["last_error"]) == (LATER, None, "451 4.3.0 try later")
    assert dict(await pool.fetch("SELECT recipient, status FROM queue_recipients WHERE queue_id = $1", partly)) == {
        "b@far.example": "delivered", "c@far.example": "deferred"}
    # taken over: nothing written
    assert await pool.fetchval("SELECT status FROM queue_recipients WHERE queue_id = $1", taken) == "pending"
    assert await pool.fetchval("SELECT lease_owner FROM queue WHERE id = $1", taken) == "w2"
    log = await pool.fetch("SELECT queue_id, recipient, event FROM delivery_log WHERE event <> 'queued' ORDER BY id")
    assert [tuple(r) for r in log] == [(done, "a@far.example", "delivered"), (partly, "b@far.example", "delivered"),
                                       (partly, "c@far.example", "deferred")]


async def test_a_message_still_in_a_mailbox_stays_when_its_entry_finishes(pool: asyncpg.Pool) -> None:
    from mailcore.passwords import hash_password_sync
    from storage import accounts

    await accounts.add_domain(pool, "ours.example")
    account = await accounts.add_account(pool, "u@ours.example", hash_password_sync("pw"))
    qid = await _queue(pool, "a@far.example", local=account)
    (entry,) = await store.claim(pool, "w1", NOW, 60)
    assert await store.record_many(pool, "w1", [Attempt(qid, [_ok(entry.recipients[0].id)], NOW, LATER)]) == {qid}
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", entry.message_id) == 1


async def test_recorder_writes_attempts_that_finish_together(pool: asyncpg.Pool) -> None:
    ids = [await _queue(pool, f"r{i}@far.example") for i in range(8)]
    entries = await store.claim(pool, "w1", NOW, 60, limit=8)
    await pool.execute("UPDATE queue SET lease_owner = 'w2' WHERE id = $1", ids[-1])
    recorder = store.Recorder(pool, "w1")
    held = await asyncio.gather(*(recorder.record(Attempt(e.id, [_ok(e.recipients[0].id)], NOW, LATER))
                                  for e in entries))
    assert held == [True] * 7 + [False]
    assert [r["id"] for r in await pool.fetch("SELECT id FROM queue")] == [ids[-1]]
    assert await pool.fetchval("SELECT count(*) FROM delivery_log WHERE event = 'delivered'") == 7
