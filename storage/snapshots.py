"""SELECT's snapshot of a mailbox, kept per process and brought up to date from what changed since.

A mailbox's entries at a given `highestmodseq` are fixed: every change to them (delivery, APPEND, STORE,
EXPUNGE, COPY, MOVE) raises the mailbox row's `highestmodseq` in the same transaction, and records the
entries it wrote (`mailbox_messages.modseq`) or removed (`expunged.modseq`) at a modseq above the old
one. So a snapshot read at modseq M plus the entries and expunges above M, read in one statement with
the mailbox row, is the snapshot at the row's modseq: a warm SELECT of a 100,000-message mailbox reads
what changed (usually nothing) instead of 100,000 rows. The first SELECT in a process, or one after
eviction, reads everything (`mailstore.snapshot`).

Keywords only grow here: one no message carries any more stays listed in FLAGS until the entry is read
afresh, as RFC 3501 §7.2.6 allows (FLAGS names the flags applicable in the mailbox; Dovecot keeps a
mailbox's keywords for good). Entries are held as compact arrays and bounded by `max_uids` in all, the
least recently used evicted first. Must not: know IMAP.
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg

from storage import mailstore
from storage.mailstore import MAILBOX_COLUMNS, MAX_KEYWORDS, SEEN, Conn, Mailbox, MailboxNotFound, Snapshot

DEFAULT_MAX_UIDS = 2_000_000  # 16 MB of UIDs per process at most

# The mailbox row, and what changed after $2, in one statement (so one consistent view): entries
# written after $2 (new ones, and old ones whose flags changed) with their flags, UIDs expunged after
# $2, and the first unseen UID. Unchanged entries keep their flags, so the first unseen one is at or
# after the cached first unseen ($3, or the old UIDNEXT when there was none) or among the changed ones.
_DELTA = (
    f"WITH box AS (SELECT {MAILBOX_COLUMNS}, recent_uid FROM mailboxes WHERE id = $1),"
    " changed AS (SELECT uid, flags FROM mailbox_messages WHERE mailbox_id = $1 AND modseq > $2)"
    " SELECT box.*,"
    "  (SELECT array_agg(uid ORDER BY uid) FROM changed) AS changed_uids,"
    "  (SELECT array_agg(DISTINCT f) FROM changed, unnest(flags) f WHERE left(f, 1) <> '\\') AS keywords,"
    "  (SELECT array_agg(uid ORDER BY uid) FROM expunged WHERE mailbox_id = $1 AND modseq > $2) AS gone,"
    "  (SELECT min(uid) FROM mailbox_messages WHERE mailbox_id = $1"
    "    AND uid >= LEAST($3::bigint, (SELECT min(uid) FROM changed)) AND NOT ($4 = ANY(flags))) AS first_unseen"
    " FROM box"
)


@dataclass(frozen=True)
class _Entry:
    uidvalidity: int
    modseq: int
    uidnext: int
    uids: array  # of 'q', ascending
    first_unseen: int | None
    keywords: frozenset[str]


class SnapshotCache:
    """One per process (its IMAP server): `snapshot` answers as `mailstore.snapshot` does."""

    def __init__(self, max_uids: int = DEFAULT_MAX_UIDS) -> None:
        self.max_uids = max_uids
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._held = 0  # UIDs held in all entries

    async def snapshot(self, conn: Conn, mailbox_id: int, claim_recent: bool = False) -> Snapshot:
        """The mailbox and its UIDs in one consistent view, from the cached entry and what changed
        since it when there is one; with `claim_recent`, this session's \\Recent claimed."""
        old = self._entries.get(mailbox_id)
        if old is None:
            snap = await mailstore.snapshot(conn, mailbox_id, claim_recent=claim_recent)
            entry = _Entry(snap.mailbox.uidvalidity, snap.mailbox.highestmodseq, snap.mailbox.uidnext,
                           array("q", snap.uids), snap.first_unseen_uid, frozenset(snap.keywords))
            self._keep(mailbox_id, entry)
            # the entry's array, as a hit gives: asyncpg's list (an int object per UID) goes now
            return dataclasses.replace(snap, uids=entry.uids)
        row = await conn.fetchrow(_DELTA, mailbox_id, old.modseq,
                                  old.first_unseen if old.first_unseen is not None else old.uidnext, SEEN)
        if row is None:
            self._drop(mailbox_id)
            raise MailboxNotFound(str(mailbox_id))
        box = mailstore.mailbox_from_row(row)
        if box.uidvalidity != old.uidvalidity:  # not for the same id; but never trust a stale entry
            self._drop(mailbox_id)
            return await self.snapshot(conn, mailbox_id, claim_recent)
        entry = old if box.highestmodseq == old.modseq else _advance(old, box, row)
        self._keep(mailbox_id, entry)
        uids = entry.uids  # shared, so never changed: an entry brought forward is a new array
        recent_from = None
        if claim_recent:
            upto = uids[-1] + 1 if uids else None
            recent_from = upto
            if upto is not None and row["recent_uid"] < upto:
                recent_from = await mailstore.claim_recent(conn, mailbox_id, upto)
        return Snapshot(box, uids, entry.first_unseen, sorted(entry.keywords)[:MAX_KEYWORDS], recent_from)

    def held(self, mailbox_id: int) -> int | None:
        """The modseq of the snapshot held for `mailbox_id`, if one is."""
        entry = self._entries.get(mailbox_id)
        return entry.modseq if entry is not None else None

    def _keep(self, mailbox_id: int, entry: _Entry) -> None:
        """Hold `entry` as the most recently used, unless a newer one is held already (a concurrent
        SELECT in this process read further); evict the least recently used beyond `max_uids`."""
        held = self._entries.get(mailbox_id)
        if held is not None and held.uidvalidity == entry.uidvalidity and held.modseq > entry.modseq:
            self._entries.move_to_end(mailbox_id)
            return
        self._drop(mailbox_id)
        if len(entry.uids) > self.max_uids:
            return
        self._entries[mailbox_id] = entry
        self._held += len(entry.uids)
        while self._held > self.max_uids:
            _, evicted = self._entries.popitem(last=False)
            self._held -= len(evicted.uids)

    def _drop(self, mailbox_id: int) -> None:
        gone = self._entries.pop(mailbox_id, None)
        if gone is not None:
            self._held -= len(gone.uids)


def _advance(old: _Entry, box: Mailbox, row: asyncpg.Record) -> _Entry:
    """`old` with the changes in `row` (a `_DELTA` row) applied: expunged UIDs out, new ones (all at or
    above the old UIDNEXT, since UIDs only grow) in, keywords added."""
    uids = old.uids
    gone = row["gone"] or []
    if gone:
        drop = set(gone)
        if len(drop) * 20 < len(uids):
            uids = array("q", uids)
            for uid in sorted(drop, reverse=True):
                i = bisect_left(uids, uid)
                if i < len(uids) and uids[i] == uid:
                    del uids[i]
        else:
            uids = array("q", (u for u in uids if u not in drop))
    new = [u for u in row["changed_uids"] or () if u >= old.uidnext]
    if new:
        if uids is old.uids:
            uids = array("q", uids)
        uids.extend(new)
    keywords = old.keywords | frozenset(row["keywords"] or ())
    return _Entry(box.uidvalidity, box.highestmodseq, box.uidnext, uids, row["first_unseen"],
                  keywords)
