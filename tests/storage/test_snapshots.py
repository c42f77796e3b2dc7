"""SELECT's per-process snapshot cache against a real PostgreSQL: after any change, from any
connection, it answers what a full read answers, having read only what changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from storage import mailstore
from storage.snapshots import SnapshotCache
from tests.storage.test_mailstore import account, deliver, inbox, raw  # noqa: F401  (fixture)

Step = Callable[[asyncpg.Pool, int, int, int], Awaitable[object]]  # (pool, account, inbox id, other id)


async def _flag(pool: asyncpg.Pool, box: int, uids: list[int], mode: str, flags: list[str]) -> None:
    await mailstore.store_flags(pool, box, uids, mode, flags)


# Each case: the changes made between two SELECTs through the cache.
CHANGES: list[tuple[str, list[Step]]] = [
    ("nothing", []),
    ("new mail", [lambda p, a, b, o: deliver(p, a, raw(10))]),
    ("first unseen read", [lambda p, a, b, o: _flag(p, b, [2], "add", ["\\Seen"])]),
    ("every unseen read", [lambda p, a, b, o: _flag(p, b, [2, 4, 5], "add", ["\\Seen"])]),
    ("an old one unread again", [lambda p, a, b, o: _flag(p, b, [1], "remove", ["\\Seen"])]),
    ("a keyword", [lambda p, a, b, o: _flag(p, b, [3], "add", ["$Work"])]),
    ("expunge in the middle", [lambda p, a, b, o: _flag(p, b, [2, 3], "add", ["\\Deleted"]),
                               lambda p, a, b, o: mailstore.expunge(p, b)]),
    ("expunge everything", [lambda p, a, b, o: _flag(p, b, [1, 2, 3, 4, 5], "add", ["\\Deleted"]),
                            lambda p, a, b, o: mailstore.expunge(p, b)]),
    ("copied in", [lambda p, a, b, o: mailstore.copy(p, o, [1], b)]),
    ("moved out", [lambda p, a, b, o: mailstore.copy(p, b, [4, 5], o, move=True)]),
    ("appended with flags", [lambda p, a, b, o: mailstore.append(p, b, raw(20), summarize(raw(20)),
                                                                    ["\\Seen", "Later"], None)]),
    ("new mail, then expunged", [lambda p, a, b, o: deliver(p, a, raw(11)),
                                 lambda p, a, b, o: _flag(p, b, [6], "add", ["\\Deleted"]),
                                 lambda p, a, b, o: mailstore.expunge(p, b)]),
    ("renamed", [lambda p, a, b, o: mailstore.rename_mailbox(p, a, "Other", "Renamed")]),
]


async def _setup(pool: asyncpg.Pool, account_id: int) -> tuple[int, int]:
    """INBOX with 5 messages, 1 and 3 seen; Other with one message."""
    for i in range(5):
        await deliver(pool, account_id, raw(i))
    box = (await inbox(pool, account_id)).id
    await mailstore.store_flags(pool, box, [1, 3], "add", ["\\Seen"])
    other = await mailstore.create_mailbox(pool, account_id, "Other")
    await mailstore.append(pool, other, raw(30), summarize(raw(30)), ["$Old"], None)
    return box, other


@pytest.mark.parametrize(("case", "steps"), CHANGES, ids=[c for c, _ in CHANGES])
async def test_a_warm_select_answers_as_a_full_read(pool: asyncpg.Pool, account: int, case: str,  # noqa: F811
                                                    steps: list[Step]) -> None:
    box, other = await _setup(pool, account)
    cache = SnapshotCache()
    for mailbox_id in (box, other):
        await cache.snapshot(pool, mailbox_id)
    for step in steps:
        await step(pool, account, box, other)
    for mailbox_id in (box, other):
        full = await mailstore.snapshot(pool, mailbox_id)
        warm = await cache.snapshot(pool, mailbox_id)
        assert (warm.mailbox, list(warm.uids), warm.first_unseen_uid) == (full.mailbox, full.uids, full.first_unseen_uid)
        assert set(full.keywords) <= set(warm.keywords)
        assert cache.held(mailbox_id) == full.mailbox.highestmodseq  # brought forward, not dropped


async def test_keywords_stay_listed_once_seen(pool: asyncpg.Pool, account: int) -> None:  # noqa: F811
    box, _ = await _setup(pool, account)
    cache = SnapshotCache()
    await mailstore.store_flags(pool, box, [1], "add", ["$Work"])
    assert (await cache.snapshot(pool, box)).keywords == ["$Work"]
    await mailstore.store_flags(pool, box, [1], "remove", ["$Work"])
    await mailstore.store_flags(pool, box, [2], "add", ["Junk"])
    assert (await cache.snapshot(pool, box)).keywords == ["$Work", "Junk"]


async def test_recent_is_claimed_once_through_the_cache(pool: asyncpg.Pool, account: int) -> None:  # noqa: F811
    box, _ = await _setup(pool, account)
    cache = SnapshotCache()
    assert (await cache.snapshot(pool, box)).recent_from is None  # EXAMINE claims nothing
    assert (await cache.snapshot(pool, box, claim_recent=True)).recent_from == 1
    version = await pool.fetchval("SELECT xmin::text FROM mailboxes WHERE id = $1", box)
    assert (await cache.snapshot(pool, box, claim_recent=True)).recent_from == 6  # nothing left
    assert await pool.fetchval("SELECT xmin::text FROM mailboxes WHERE id = $1", box) == version  # no write
    await deliver(pool, account, raw(9))
    assert (await cache.snapshot(pool, box, claim_recent=True)).recent_from == 6
    # another process's cache (or a full read) agrees that nothing is left
    assert (await mailstore.snapshot(pool, box, claim_recent=True)).recent_from == 7


async def test_a_deleted_mailbox_is_not_found_and_forgotten(pool: asyncpg.Pool, account: int) -> None:  # noqa: F811
    _, other = await _setup(pool, account)
    cache = SnapshotCache()
    await cache.snapshot(pool, other)
    await mailstore.delete_mailbox(pool, account, "Other")
    with pytest.raises(mailstore.MailboxNotFound):
        await cache.snapshot(pool, other)
    assert cache.held(other) is None


async def test_entries_are_bounded_least_recently_used_first(pool: asyncpg.Pool, account: int) -> None:  # noqa: F811
    box, other = await _setup(pool, account)
    cache = SnapshotCache(max_uids=6)
    await cache.snapshot(pool, box)  # 5 UIDs
    await cache.snapshot(pool, other)  # 1: 6 in all
    assert cache.held(box) is not None and cache.held(other) is not None
    await deliver(pool, account, raw(7))
    await cache.snapshot(pool, box)  # 6 UIDs now: Other goes
    assert cache.held(other) is None and cache.held(box) is not None
    await deliver(pool, account, raw(8))
    await cache.snapshot(pool, box)  # 7: more than fits at all, so not held
    assert cache.held(box) is None
