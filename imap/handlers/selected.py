"""Commands of the SELECTED state (RFC 3501 §6.4): CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE,
UID EXPUNGE (RFC 4315), SEARCH, FETCH, STORE, COPY (with COPYUID), MOVE (RFC 6851)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from imap import encoder, fetch, replies
from imap.commands import Copy, Expunge, Fetch, FetchAtt, Search, Simple, Store
from imap.dispatch import Needs, command
from imap.encoder import Code
from imap.handlers.authenticated import find
from imap.replies import Refusal, Reply
from imap.search import MAX_KEYS, MAX_NEEDLES, key_count, needles_length, translate
from imap.selected import SelectedMailbox
from imap.sequence import SequenceSet
from storage import mailsearch, mailstore

if TYPE_CHECKING:
    from imap.session import Session


def _selected(session: Session) -> SelectedMailbox:
    assert session.selected is not None
    return session.selected


def _writable(session: Session) -> SelectedMailbox:
    sel = _selected(session)
    if sel.readonly:
        raise Refusal(replies.READ_ONLY)
    return sel


def _resolve(sel: SelectedMailbox, seqset: SequenceSet, uid: bool) -> Sequence[int]:
    if seqset.saved:
        raise Refusal(replies.BAD_SEQUENCE)  # "$" needs SEARCHRES, not offered
    try:
        return sel.resolve(seqset, uid)
    except ValueError:
        raise Refusal(replies.BAD_SEQUENCE) from None


@command("CHECK", needs=Needs.SELECTED)
async def check(session: Session, cmd: Simple) -> Reply:
    return replies.completed(cmd.name)  # every change is already durable


@command("CLOSE", "UNSELECT", needs=Needs.SELECTED)
async def close(session: Session, cmd: Simple) -> Reply:
    sel = _selected(session)
    if cmd.name == "CLOSE" and not sel.readonly:
        try:
            await mailstore.expunge(session.ctx.pool, sel.mailbox.id)  # silently (RFC 3501 §6.4.2)
        except mailstore.MailboxNotFound:
            pass  # deleted by another session: nothing is left to expunge, and CLOSE still deselects
    session.deselect()
    return replies.completed(cmd.name)


@command("EXPUNGE", needs=Needs.SELECTED)
async def expunge(session: Session, cmd: Expunge) -> Reply:
    sel = _writable(session)
    uids = None if cmd.uids is None else _resolve(sel, cmd.uids, True)
    if uids is not None and not uids:
        return replies.completed(cmd.name)
    gone = await mailstore.expunge(session.ctx.pool, sel.mailbox.id, uids)
    sel.pending_expunge.update(u for u in gone if sel.contains(u))
    for line in sel.flush_expunges():
        session.send(line)
    return replies.completed(cmd.name)


@command("SEARCH", needs=Needs.SELECTED)
async def search(session: Session, cmd: Search) -> Reply:
    sel = _selected(session)
    if not cmd.charset_supported:
        raise Refusal(replies.BAD_CHARSET)
    if needles_length(cmd.criteria) > MAX_NEEDLES:
        raise Refusal(replies.SEARCH_TOO_LONG)
    if key_count(cmd.criteria) > MAX_KEYS:
        raise Refusal(replies.SEARCH_TOO_MANY_KEYS)
    try:
        criteria = translate(cmd.criteria, sel)
    except ValueError:
        raise Refusal(replies.BAD_ITEMS) from None
    uids = await mailsearch.search(session.ctx.pool, sel.mailbox.id, criteria)
    numbers = [u for u in uids if sel.contains(u)] if cmd.uid else \
        [s for s in (sel.seq_of(u) for u in uids) if s is not None]
    session.send(b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
    return replies.completed(cmd.name)


@command("FETCH", needs=Needs.SELECTED)
async def fetch_(session: Session, cmd: Fetch) -> Reply:
    sel = _selected(session)
    atts = list(cmd.attributes)
    for att in atts:
        if att.name not in fetch.SUPPORTED and not (att.name == "BODY" and att.section is not None):
            raise Refusal(replies.BAD_ITEMS)
    uids = _resolve(sel, cmd.sequence, cmd.uid)
    if cmd.uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))  # RFC 3501 §6.4.8
    if uids and not sel.readonly and any(a.sets_seen for a in atts):
        modseq, _ = await mailstore.store_flags(session.ctx.pool, sel.mailbox.id, uids, "add", [mailstore.SEEN])
        if modseq is not None:
            sel.own_modseqs.add(modseq)
        if not any(a.name == "FLAGS" for a in atts):
            atts.append(FetchAtt("FLAGS"))  # the client learns of the \Seen it caused
    streamed = fetch.streamed(atts)
    if streamed is not None:
        sent = await fetch.write_streamed(session, streamed, uids)
        return _completed(cmd.name, sent, uids)
    plan = fetch.Plan(atts)
    pool = session.ctx.pool
    sent = 0
    for i in range(0, len(uids), plan.batch):
        batch = uids[i : i + plan.batch]
        rows = await mailstore.fetch_entries(pool, sel.mailbox.id, batch, plan.columns,
                                             fetch.RAW_INLINE_BELOW if plan.needs_raw else None)
        for row in rows:
            seq = sel.seq_of(row["uid"])
            if seq is not None:
                await fetch.write_message(session, seq, row, atts)
                sent += 1
        await session.transport.drain()
    return _completed(cmd.name, sent, uids)


def _completed(name: str, done: int, uids: Sequence[int]) -> Reply:
    """OK, with EXPUNGEISSUED when fewer than the `uids` asked for were found: the others were expunged
    by another session, and this one is told at the next point it may be (Dovecot's FETCH answers so;
    RFC 9051 §7.1). Counted from the rows the command read anyway: no query of its own."""
    return replies.completed(name, encoder.EXPUNGEISSUED if done < len(uids) else None)


@command("STORE", needs=Needs.SELECTED)
async def store(session: Session, cmd: Store) -> Reply:
    sel = _writable(session)
    uids = _resolve(sel, cmd.sequence, cmd.uid)
    flags = [f for f in cmd.flags if f != "\\Recent"]
    if not uids:
        return replies.completed(cmd.name)
    known = session.known_keywords.setdefault(sel.mailbox.id, set())
    new = mailstore.keywords_of(flags) - known if cmd.mode != "remove" else set()
    modseq, rows = await mailstore.store_flags(session.ctx.pool, sel.mailbox.id, uids, cmd.mode, flags,
                                               check_keywords=new)
    known.update(new)
    if modseq is not None:
        sel.own_modseqs.add(modseq)
    if not cmd.silent:
        for uid, current in rows:
            seq = sel.seq_of(uid)
            if seq is None:
                continue
            line = b"* %d FETCH (FLAGS %s" % (seq, encoder.flag_list(sel.flags_with_recent(uid, current)))
            session.send(line + (b" UID %d)\r\n" % uid if cmd.uid else b")\r\n"))
    return _completed(cmd.name, len(rows), uids)


@command("COPY", "MOVE", needs=Needs.SELECTED)
async def copy(session: Session, cmd: Copy) -> Reply:
    sel = _writable(session) if cmd.name == "MOVE" else _selected(session)
    uids = _resolve(sel, cmd.sequence, cmd.uid)
    dest = await find(session, cmd.mailbox, replies.TRY_CREATE)
    if not uids:
        return replies.completed(cmd.name)
    move = cmd.name == "MOVE"
    if move and dest.id == sel.mailbox.id:
        raise Refusal(replies.CANNOT)
    known = session.known_keywords.setdefault(dest.id, set())
    # all or none: NO [EXPUNGEISSUED] (mailstore.MessagesExpunged) when another session expunged some of
    # them; the sync after the command then announces those expunges (RFC 9051 §6.4.7, Dovecot)
    result = await mailstore.copy(session.ctx.pool, sel.mailbox.id, uids, dest.id, move=move, known_keywords=known)
    known.update(result.keywords)
    code = Code.copyuid(result.uidvalidity, result.source_uids, result.dest_uids) if result.dest_uids else None
    if not move:
        return replies.completed(cmd.name, code)
    if code is not None:
        session.send(encoder.ok("*", "moved", code))  # RFC 6851 §4.3: COPYUID before the EXPUNGEs
    sel.pending_expunge.update(u for u in result.source_uids if sel.contains(u))
    for line in sel.flush_expunges():
        session.send(line)
    return replies.completed(cmd.name)
