"""The IMAP mail store against a real PostgreSQL: modseqs, expunge log, copies, quota, search, notify."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from storage import accounts, mailsearch, mailstore
from storage.delivery import Delivery, LocalRecipient
from storage.notify import MailboxNotifier
from tests.storage import scan


def raw(n: int, subject: str = "hello") -> bytes:
    return f"From: b@example.org\r\nSubject: {subject}\r\nMessage-ID: <{n}@x>\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
async def account(pool: asyncpg.Pool) -> int:
    await accounts.add_domain(pool, "example.test")
    return await accounts.add_account(pool, "u@example.test", "x")


async def deliver(pool: asyncpg.Pool, account_id: int, data: bytes, mailbox: str = "INBOX") -> int:
    d = Delivery(sender="b@example.org")
    d.add_local(LocalRecipient(account_id, "u@example.test", mailbox))
    return (await d.commit(pool, data, summarize(data))).entries[0][1]


async def inbox(pool: asyncpg.Pool, account_id: int) -> mailstore.Mailbox:
    box = await mailstore.get_mailbox(pool, account_id, "INBOX")
    assert box is not None
    return box


async def test_changes_since_sees_new_flags_and_expunges(pool: asyncpg.Pool, account: int) -> None:
    for i in range(3):
        await deliver(pool, account, raw(i))
    box = await inbox(pool, account)
    snap = await mailstore.snapshot(pool, box.id)
    assert snap.uids == [1, 2, 3] and snap.first_unseen_uid == 1
    since = snap.mailbox.highestmodseq
    await mailstore.store_flags(pool, box.id, [1], "add", ["\\Seen", "\\Deleted"])
    await mailstore.expunge(pool, box.id)
    await deliver(pool, account, raw(4))
    changes = await mailstore.changes_since(pool, box.id, since)
    assert changes is not None
    assert [u for u, _, _ in changes.updated] == [4] and changes.expunged == [1]
    assert changes.highestmodseq == since + 3
    assert (await mailstore.changes_since(pool, box.id, changes.highestmodseq)) == \
        mailstore.Changes(changes.highestmodseq)


async def test_copy_move_quota_and_used_bytes(pool: asyncpg.Pool, account: int) -> None:
    data = raw(1)
    await deliver(pool, account, data)
    box = await inbox(pool, account)
    archive = await mailstore.get_mailbox(pool, account, "Archive")
    trash = await mailstore.get_mailbox(pool, account, "Trash")
    assert archive and trash
    result = await mailstore.copy(pool, box.id, [1], archive.id)
    assert result.source_uids == [1] and result.dest_uids == [1]
    assert await pool.fetchval("SELECT used_bytes FROM accounts") == 2 * len(data)
    await mailstore.copy(pool, archive.id, [1], trash.id, move=True)
    assert await pool.fetchval("SELECT used_bytes FROM accounts") == 2 * len(data)
    assert await pool.fetchval("SELECT uid FROM expunged WHERE mailbox_id = $1", archive.id) == 1
    await pool.execute("UPDATE accounts SET quota_bytes = used_bytes")
    with pytest.raises(mailstore.OverQuota):
        await mailstore.copy(pool, box.id, [1], archive.id)
    await mailstore.delete_mailbox(pool, account, "Trash")
    assert await pool.fetchval("SELECT used_bytes FROM accounts") == len(data)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_expunge_removes_unreferenced_messages_only(pool: asyncpg.Pool, account: int) -> None:
    await deliver(pool, account, raw(1))
    box = await inbox(pool, account)
    archive = await mailstore.get_mailbox(pool, account, "Archive")
    assert archive
    await mailstore.copy(pool, box.id, [1], archive.id)
    await mailstore.store_flags(pool, box.id, [1], "add", ["\\Deleted"])
    assert await mailstore.expunge(pool, box.id) == [1]
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1
    await mailstore.store_flags(pool, archive.id, [1], "add", ["\\Deleted"])
    assert await mailstore.expunge(pool, archive.id, [1]) == [1]
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await mailstore.expunge(pool, archive.id) == []


async def test_rename_with_children_and_inbox(pool: asyncpg.Pool, account: int) -> None:
    await mailstore.create_mailbox(pool, account, "A/B/C")
    await mailstore.rename_mailbox(pool, account, "A", "Z/A")
    names = [b.name for b in await mailstore.list_mailboxes(pool, account)]
    assert {"Z", "Z/A", "Z/A/B", "Z/A/B/C"} <= set(names) and "A" not in names
    await deliver(pool, account, raw(1))
    await mailstore.rename_mailbox(pool, account, "INBOX", "Old")
    old = await mailstore.get_mailbox(pool, account, "Old")
    assert old is not None and (await mailstore.mailbox_status(pool, old.id)).messages == 1
    assert (await mailstore.mailbox_status(pool, (await inbox(pool, account)).id)).messages == 0
    with pytest.raises(mailstore.CannotModify):
        await mailstore.rename_mailbox(pool, account, "Old", "Old/Sub")


async def test_search_escapes_like_wildcards(pool: asyncpg.Pool, account: int) -> None:
    await deliver(pool, account, raw(1, "100% sure"))
    await deliver(pool, account, raw(2, "1000 sure"))
    await deliver(pool, account, raw(3, "a_b"))
    await deliver(pool, account, raw(4, "axb"))
    box = await inbox(pool, account)

    async def search(c: mailsearch.Criteria) -> list[int]:
        return await scan.uids(pool, box.id, c)

    assert await search(mailsearch.Contains("subject", "100%")) == [1]
    assert await search(mailsearch.Contains("subject", "a_b")) == [3]
    assert await search(mailsearch.Contains("text", "0% S")) == [1]
    assert await search(mailsearch.Contains("header", ".*", "subject")) == []
    assert await search(mailsearch.Negate(mailsearch.UidIn(((2, 3),)))) == [1, 4]


async def test_recent_is_claimed_once(pool: asyncpg.Pool, account: int) -> None:
    await deliver(pool, account, raw(1))
    box = await inbox(pool, account)
    assert await mailstore.claim_recent(pool, box.id, 2) == 1
    assert await mailstore.claim_recent(pool, box.id, 2) == 2
    assert (await mailstore.mailbox_status(pool, box.id)).recent == 0


async def test_notifier_wakes_on_delivery_from_another_connection(pool: asyncpg.Pool, db_dsn: str,
                                                                  account: int) -> None:
    notifier = MailboxNotifier(db_dsn)
    await notifier.start()
    try:
        box = await inbox(pool, account)
        sub = notifier.subscribe(box.id)
        other = notifier.subscribe(box.id + 1000)
        await deliver(pool, account, raw(1))
        await asyncio.wait_for(sub.event.wait(), 2)
        assert not other.event.is_set()
        sub.close()
        other.close()
    finally:
        await notifier.stop()


@pytest.mark.parametrize(("case", "quota", "name", "error"), [
    ("stored", None, "INBOX", None),
    ("any name", None, None, None),
    ("renamed since", None, "Elsewhere", mailstore.MailboxNotFound),
    ("over quota", 10, "INBOX", mailstore.OverQuota),
])
async def test_append_is_durable_and_refusals_leave_nothing(pool: asyncpg.Pool, db_dsn: str, account: int,
                                                            case: str, quota: int | None, name: str | None,
                                                            error: type[Exception] | None) -> None:
    """One statement stores the message, its entry, the charge and the notification; a refusal (the
    mailbox gone under its name, no room) writes nothing at all: no UID, no modseq, no bytes."""
    await pool.execute("UPDATE accounts SET quota_bytes = $1", quota)
    box = await inbox(pool, account)
    notifier = MailboxNotifier(db_dsn)
    await notifier.start()
    sub = notifier.subscribe(box.id)
    data = raw(1)
    try:
        if error is not None:
            with pytest.raises(error):
                await mailstore.append(pool, box.id, data, summarize(data), ["\\Seen"], None, name)
            after = await mailstore.mailbox_status(pool, box.id)
            assert (after.uidnext, after.highestmodseq, after.messages) == (box.uidnext, box.highestmodseq, 0)
            assert await pool.fetchval("SELECT used_bytes FROM accounts") == 0
            assert await pool.fetchval("SELECT count(*) FROM messages") == 0
            await asyncio.sleep(0.1)
            assert not sub.event.is_set()
            return
        validity, uid = await mailstore.append(pool, box.id, data, summarize(data), ["\\Seen", "\\Seen", "x"],
                                               None, name)
        assert (validity, uid) == (box.uidvalidity, box.uidnext)
        row = await pool.fetchrow("SELECT mm.flags, mm.modseq, m.raw, m.subject FROM mailbox_messages mm"
                                  " JOIN messages m ON m.id = mm.message_id WHERE mm.mailbox_id = $1", box.id)
        assert (list(row["flags"]), row["raw"], row["subject"]) == (["\\Seen", "x"], data, "hello")
        assert row["modseq"] == box.highestmodseq + 1
        assert await pool.fetchval("SELECT used_bytes FROM accounts") == len(data)
        await asyncio.wait_for(sub.event.wait(), 2)
    finally:
        sub.close()
        await notifier.stop()


@pytest.mark.parametrize(("flags", "keywords"), [
    ([[], [], []], []),
    ([["\\Seen"], ["\\Seen", "\\Flagged"], []], []),
    ([["$Work", "\\Seen"], ["$Work"], ["Junk", "$Work", "\\Answered"]], ["$Work", "Junk"]),
])
async def test_snapshot_reads_uids_first_unseen_and_keywords_and_claims_recent_once(
        pool: asyncpg.Pool, account: int, flags: list[list[str]], keywords: list[str]) -> None:
    box = await inbox(pool, account)
    for i, f in enumerate(flags):
        await deliver(pool, account, raw(i))
        await mailstore.store_flags(pool, box.id, [i + 1], "set", f)
    await mailstore.expunge(pool, box.id, [])  # nothing: \Deleted is not set
    unseen = [i + 1 for i, f in enumerate(flags) if "\\Seen" not in f]
    looked = await mailstore.snapshot(pool, box.id)  # EXAMINE: claims nothing
    assert (looked.uids, looked.first_unseen_uid, looked.keywords) == ([1, 2, 3], unseen[0] if unseen else None,
                                                                      keywords)
    assert looked.recent_from is None
    first = await mailstore.snapshot(pool, box.id, claim_recent=True)
    assert first.recent_from == 1 and first.keywords == keywords
    version = await pool.fetchval("SELECT xmin::text FROM mailboxes WHERE id = $1", box.id)
    again = await mailstore.snapshot(pool, box.id, claim_recent=True)
    assert again.recent_from == 4  # nothing is recent any more, and the row was not written again
    assert await pool.fetchval("SELECT xmin::text FROM mailboxes WHERE id = $1", box.id) == version
    await deliver(pool, account, raw(9))
    assert (await mailstore.snapshot(pool, box.id, claim_recent=True)).recent_from == 4


async def test_snapshot_of_an_empty_or_missing_mailbox(pool: asyncpg.Pool, account: int) -> None:
    box = await inbox(pool, account)
    empty = await mailstore.snapshot(pool, box.id, claim_recent=True)
    assert (empty.uids, empty.first_unseen_uid, empty.keywords, empty.recent_from) == ([], None, [], None)
    with pytest.raises(mailstore.MailboxNotFound):
        await mailstore.snapshot(pool, box.id + 1000)


@pytest.mark.parametrize(("mode", "flags", "changes"), [
    ("add", ["\\Seen"], [2]),  # message 1 has it already
    ("add", ["\\Seen", "$Work"], [1, 2]),
    ("remove", ["\\Flagged"], []),
    ("remove", ["\\Seen"], [1]),
    ("set", ["\\Seen"], [2]),
    ("set", [], [1]),
])
async def test_store_flags_spends_a_modseq_only_on_a_change_and_reports_every_entry(
        pool: asyncpg.Pool, db_dsn: str, account: int, mode: str, flags: list[str], changes: list[int]) -> None:
    for i in range(2):
        await deliver(pool, account, raw(i))
    box = await inbox(pool, account)
    await mailstore.store_flags(pool, box.id, [1], "add", ["\\Seen"])
    before = (await mailstore.mailbox_status(pool, box.id)).highestmodseq
    current = {1: {"\\Seen"}, 2: set()}
    notifier = MailboxNotifier(db_dsn)
    await notifier.start()
    sub = notifier.subscribe(box.id)
    try:
        modseq, rows = await mailstore.store_flags(pool, box.id, [1, 2, 7], mode, flags)
        expected = {u: sorted(current[u] | set(flags) if mode == "add" else current[u] - set(flags)
                              if mode == "remove" else set(flags)) for u in (1, 2)}
        assert rows == [(1, expected[1]), (2, expected[2])]
        after = (await mailstore.mailbox_status(pool, box.id)).highestmodseq
        if changes:
            assert modseq == after == before + 1
            await asyncio.wait_for(sub.event.wait(), 2)
        else:
            assert modseq is None and after == before
            await asyncio.sleep(0.1)
            assert not sub.event.is_set()
        changed = await mailstore.changes_since(pool, box.id, before)
        assert changed is not None and [u for u, _, _ in changed.updated] == changes
    finally:
        sub.close()
        await notifier.stop()
