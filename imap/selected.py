"""The session's view of its selected mailbox: sequence numbers, \\Recent, and pending updates.

Owns the mapping between message sequence numbers and UIDs (a sorted list of the UIDs this session
has been told about), the UIDs this session holds as \\Recent, the modseq up to which it has seen
changes, and the expunges it learnt of but may not announce yet (RFC 3501 §7.4.1: no EXPUNGE during
FETCH, STORE or SEARCH, when sequence numbers must stay stable). Turns a `Changes` from the store into
the untagged responses the client must get. Must not: do I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from imap import encoder
from imap.sequence import SequenceSet
from storage.mailstore import Changes, Mailbox

RECENT = "\\Recent"


class SelectedMailbox:
    def __init__(self, mailbox: Mailbox, uids: Sequence[int], readonly: bool) -> None:
        self.mailbox = mailbox
        # ascending; position + 1 is the sequence number. An array of 8-byte integers, the session's
        # own copy: a list would hold a 32-byte int object per message besides its pointer (36 MB for
        # ten sessions on a 100,000-message mailbox instead of 8)
        self.uids = array("q", uids)
        self.readonly = readonly
        self.recent: set[int] = set()
        self.modseq = mailbox.highestmodseq
        self.own_modseqs: set[int] = set()  # changes this session made and already reported
        self.pending_expunge: set[int] = set()

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def contains(self, uid: int) -> bool:
        return self.seq_of(uid) is not None

    def uids_in(self, ranges: list[tuple[int, int]]) -> array:
        """The known UIDs within the given UID ranges, ascending (an array, as `uids` is: `1:*` on
        a large mailbox is copied in slices, not as one int object per message)."""
        out = array("q")
        for lo, hi in ranges:
            out.extend(self.uids[bisect_left(self.uids, lo) : bisect_right(self.uids, hi)])
        return out

    def resolve(self, seqset: SequenceSet, uid: bool) -> array:
        """UIDs named by a sequence set (of UIDs when `uid`); ValueError for bad sequence numbers."""
        if uid:
            return self.uids_in(seqset.resolve(self.max_uid))
        out = array("q")
        if self.uids:
            for lo, hi in seqset.resolve(len(self.uids), strict=True):
                out.extend(self.uids[lo - 1 : hi])
        return out

    def seq_ranges_as_uids(self, seqset: SequenceSet) -> list[tuple[int, int]]:
        """Sequence-number ranges as UID ranges (for SEARCH keys); out-of-range numbers ignored."""
        return [(self.uids[lo - 1], self.uids[hi - 1]) for lo, hi in seqset.resolve(len(self.uids))]

    def flags_with_recent(self, uid: int, flags: list[str]) -> list[str]:
        return [*flags, RECENT] if uid in self.recent else flags

    def remove(self, uid: int) -> int | None:
        """Forget an expunged UID; returns the sequence number it had."""
        seq = self.seq_of(uid)
        if seq is not None:
            del self.uids[seq - 1]
            self.recent.discard(uid)
        self.pending_expunge.discard(uid)
        return seq

    def apply(self, changes: Changes, allow_expunge: bool) -> tuple[list[bytes], list[int]]:
        """Untagged FETCH and EXPUNGE responses for `changes`, and the new UIDs (not yet added:
        the session claims \\Recent for them first, then calls `add_new`)."""
        out: list[bytes] = []
        top = self.max_uid
        new: list[int] = []
        for uid, flags, modseq in changes.updated:
            if uid > top:
                new.append(uid)
            elif modseq not in self.own_modseqs and uid not in self.pending_expunge:
                seq = self.seq_of(uid)
                if seq is not None:
                    out.append(b"* %d FETCH (FLAGS %s)\r\n"
                               % (seq, encoder.flag_list(self.flags_with_recent(uid, flags))))
        self.pending_expunge.update(u for u in changes.expunged if self.contains(u))
        if allow_expunge:
            out.extend(self.flush_expunges())
        self.modseq = max(self.modseq, changes.highestmodseq)
        self.own_modseqs = {m for m in self.own_modseqs if m > self.modseq}
        return out, new

    def flush_expunges(self) -> list[bytes]:
        out = []
        for uid in sorted(self.pending_expunge):
            seq = self.remove(uid)
            if seq is not None:
                out.append(encoder.expunge(seq))
        self.pending_expunge.clear()
        return out

    def add_new(self, uids: list[int], recent_from: int | None) -> list[bytes]:
        """Announce new messages: EXISTS, and RECENT when some are \\Recent for this session."""
        if not uids:
            return []
        self.uids.extend(uids)
        if recent_from is not None:
            self.recent.update(u for u in uids if u >= recent_from)
        return [encoder.exists(len(self.uids)), b"* %d RECENT\r\n" % len(self.recent)]
