"""The delivery seam against a real PostgreSQL: one transaction, UIDs, dedup, rollback."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from mailcore.passwords import hash_password_sync
from storage import accounts
from storage.delivery import Delivery, LocalRecipient, RemoteRecipient

MSG = b"From: a@remote.example\r\nTo: u@d.example\r\nSubject: hi\r\n\r\nbody\r\n"
HASH = hash_password_sync("pw")


async def _setup(pool: asyncpg.Pool, *users: str) -> list[int]:
    await accounts.add_domain(pool, "d.example")
    return [await accounts.add_account(pool, u, HASH) for u in users]


async def _deliver(pool: asyncpg.Pool, account_ids: list[int], remote: list[str] = ()):
    d = Delivery(sender="a@remote.example")
    for aid in account_ids:
        d.add_local(LocalRecipient(aid, "x@d.example"))
    for r in remote:
        d.add_remote(RemoteRecipient(r))
    return await d.commit(pool, MSG, summarize(MSG))


async def test_fifty_concurrent_deliveries_get_uids_1_to_50(pool: asyncpg.Pool) -> None:
    (uid_owner,) = await _setup(pool, "u@d.example")
    results = await asyncio.gather(*[_deliver(pool, [uid_owner]) for _ in range(50)])
    uids = sorted(uid for r in results for _, uid in r.entries)
    assert uids == list(range(1, 51))
    assert await pool.fetchval("SELECT uidnext FROM mailboxes WHERE account_id=$1 AND name='INBOX'",
                               uid_owner) == 51


async def test_one_message_row_for_many_local_recipients(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool, "a@d.example", "b@d.example", "c@d.example")
    stored = await _deliver(pool, ids, remote=["x@far.example", "y@far.example"])
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1
    assert len(stored.entries) == 3
    assert await pool.fetchval("SELECT count(*) FROM queue_recipients WHERE queue_id=$1", stored.queue_id) == 2
    prefixes = await pool.fetch("SELECT header_prefix FROM mailbox_messages")
    assert all(p["header_prefix"].startswith(b"Return-Path: <a@remote.example>\r\n") for p in prefixes)


async def test_failure_mid_delivery_leaves_nothing(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool, "a@d.example", "b@d.example")
    # The second recipient's account has lost every mailbox: the transaction must fail as a whole.
    await pool.execute("DELETE FROM mailboxes WHERE account_id=$1", ids[1])
    with pytest.raises(LookupError):
        await _deliver(pool, ids, remote=["x@far.example"])
    for table in ("messages", "mailbox_messages", "queue", "queue_recipients", "delivery_log"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await pool.fetchval("SELECT uidnext FROM mailboxes WHERE account_id=$1 AND name='INBOX'",
                               ids[0]) == 1


async def test_same_account_twice_is_delivered_once(pool: asyncpg.Pool) -> None:
    (aid,) = await _setup(pool, "a@d.example")
    stored = await _deliver(pool, [aid, aid])
    assert len(stored.entries) == 1


async def test_junk_mailbox_and_fallback_to_inbox(pool: asyncpg.Pool) -> None:
    (aid,) = await _setup(pool, "a@d.example")
    d = Delivery(sender="")
    d.add_local(LocalRecipient(aid, "a@d.example", mailbox="Junk"))
    stored = await d.commit(pool, MSG, summarize(MSG))
    name = await pool.fetchval("SELECT name FROM mailboxes WHERE id=$1", stored.entries[0][0])
    assert name == "Junk"
    await pool.execute("DELETE FROM mailboxes WHERE account_id=$1 AND name='Junk'", aid)
    stored = await d.commit(pool, MSG, summarize(MSG))
    assert await pool.fetchval("SELECT name FROM mailboxes WHERE id=$1", stored.entries[0][0]) == "INBOX"


async def test_notify_is_sent_on_commit(pool: asyncpg.Pool) -> None:
    (aid,) = await _setup(pool, "a@d.example")
    heard: asyncio.Queue[str] = asyncio.Queue()

    def listener(*args: object) -> None:
        heard.put_nowait(str(args[3]))

    conn = await pool.acquire()
    try:
        await conn.add_listener("mailbox_changes", listener)
        stored = await _deliver(pool, [aid])
        payload = await asyncio.wait_for(heard.get(), 5)
        assert payload == str(stored.entries[0][0])
    finally:
        await conn.remove_listener("mailbox_changes", listener)
        await pool.release(conn)


@pytest.mark.parametrize(("local", "remote"), [
    (1, []),  # one statement (_commit_one)
    (0, ["x@far.example"]),  # one statement (_commit_queued)
    (2, ["x@far.example"]),  # the transaction (_commit_on)
])
@pytest.mark.parametrize("via", ["smtp", "api", None])
async def test_sent_record_written_with_the_message(pool: asyncpg.Pool, local: int, remote: list[str],
                                                    via: str | None) -> None:
    """A submission is listed in its account's sent messages by the same commit, whichever path
    the commit takes; a delivery that is not a submission gets no such row."""
    ids = await _setup(pool, "a@d.example", "b@d.example", "sender@d.example")
    d = Delivery(sender="sender@d.example", account_id=ids[2], sent_via=via,
                 sent_recipients=["a@d.example", *remote] if via else [])
    for aid in ids[:local]:
        d.add_local(LocalRecipient(aid, "a@d.example"))
    for r in remote:
        d.add_remote(RemoteRecipient(r))
    stored = await d.commit(pool, MSG, summarize(MSG))
    rows = [dict(r) for r in await pool.fetch("SELECT account_id, message_id, via, recipients FROM sent_messages")]
    expected = [{"account_id": ids[2], "message_id": stored.message_id, "via": via,
                 "recipients": ["a@d.example", *remote]}] if via else []
    assert rows == expected
    assert len(stored.entries) == local and (stored.queue_id is not None) == bool(remote)


MULTIPART = (b"From: a@remote.example\r\nTo: u@d.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"\r\nhello\r\n--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment;"
             b" filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b1--\r\n")


@pytest.mark.parametrize("raw", [MSG, MULTIPART])
async def test_parts_stored_as_their_fields(pool: asyncpg.Pool, raw: bytes) -> None:
    """The parts column holds each PartInfo's fields as dataclasses.asdict would give them."""
    (owner,) = await _setup(pool, "u@d.example")
    d = Delivery(sender="a@remote.example")
    d.add_local(LocalRecipient(owner, "u@d.example"))
    summary = summarize(raw)
    stored = await d.commit(pool, raw, summary)
    parts = json.loads(await pool.fetchval("SELECT parts FROM messages WHERE id = $1", stored.message_id))
    assert parts == [dataclasses.asdict(p) for p in summary.parts] and len(parts) == len(summary.parts) >= 1


async def test_sha256_is_no_longer_written_but_an_older_instance_can_still_insert(pool: asyncpg.Pool) -> None:
    """Migration 0013: this version leaves messages.sha256 NULL; an instance of the previous version,
    still running during a rolling upgrade, names the column in its INSERT and must not fail."""
    (owner,) = await _setup(pool, "u@d.example")
    stored = await _deliver(pool, [owner])
    assert await pool.fetchval("SELECT sha256 FROM messages WHERE id = $1", stored.message_id) is None
    old = await pool.fetchval("INSERT INTO messages (raw, size, sha256, header, body_offset)"
                              " VALUES ($1, $2, sha256($1), '', 0) RETURNING sha256", MSG, len(MSG))
    assert len(old) == 32
