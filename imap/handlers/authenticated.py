"""Commands of the AUTHENTICATED state (RFC 3501 §6.3), also valid when a mailbox is selected:
SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, NAMESPACE, STATUS,
APPEND, plus ENABLE (RFC 5161), IDLE (RFC 2177) and GETQUOTAROOT, GETQUOTA (RFC 9208)."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import TYPE_CHECKING

from imap import encoder, mailboxes, replies
from imap.commands import (
    Append,
    Create,
    Enable,
    GetQuota,
    List,
    MailboxCommand,
    Rename,
    Select,
    Simple,
    Status,
)
from imap.dispatch import Needs, command
from imap.encoder import Code
from imap.replies import Refusal, Reply
from imap.selected import SelectedMailbox
from mailcore.mime.precompute import summarize
from storage import accounts, mailstore
from storage.mailstore import Mailbox

if TYPE_CHECKING:
    from imap.session import Session

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SUMMARIZE_IN_THREAD_ABOVE = 256 * 1024  # bigger APPENDs are summarised off the event loop


def account_id(session: Session) -> int:
    assert session.account is not None
    return session.account.id


async def find(session: Session, name: str, missing: Reply = replies.NO_SUCH_MAILBOX) -> Mailbox:
    box = await mailstore.get_mailbox(session.ctx.pool, account_id(session), mailboxes.normalize(name))
    if box is None:
        raise Refusal(missing)
    return box


@command("SELECT", "EXAMINE", needs=Needs.AUTHENTICATED)
async def select(session: Session, cmd: Select) -> Reply:
    session.deselect()  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
    box = await find(session, cmd.mailbox)
    # listening before the snapshot: a change it misses is notified, so the sync after this command
    # need not ask the store (see `Session.sync`)
    subscription = session.subscribe(box.id)
    try:
        snap = await session.ctx.snapshots.snapshot(session.ctx.pool, box.id, claim_recent=not cmd.readonly)
    except BaseException:
        if subscription is not None:
            subscription.close()
        raise
    sel = SelectedMailbox(snap.mailbox, snap.uids, cmd.readonly)
    if snap.recent_from is not None:
        sel.recent = set(snap.uids[bisect_left(snap.uids, snap.recent_from):])
    flags = [*SYSTEM_FLAGS, *snap.keywords]
    session.send(encoder.flags(flags))
    session.send(encoder.exists(sel.exists))
    session.send(b"* %d RECENT\r\n" % len(sel.recent))
    if snap.first_unseen_uid is not None:
        seq = sel.seq_of(snap.first_unseen_uid)
        if seq is not None:
            session.send(encoder.ok("*", "first unseen", Code.unseen(seq)))
    session.send(encoder.ok("*", "UIDs valid", Code.uidvalidity(snap.mailbox.uidvalidity)))
    session.send(encoder.ok("*", "predicted next UID", Code.uidnext(snap.mailbox.uidnext)))
    session.known_keywords[box.id] = set(snap.keywords)
    # RFC 3501 §7.1: \\* only while new keywords can be stored (mailstore.MAX_KEYWORDS)
    new_keywords = ("\\*",) if len(snap.keywords) < mailstore.MAX_KEYWORDS else ()
    permanent = () if cmd.readonly else (*SYSTEM_FLAGS, *snap.keywords, *new_keywords)
    session.send(encoder.ok("*", "flags permitted", Code.permanentflags(permanent)))
    session.select(sel, subscription)
    return replies.completed(cmd.name, encoder.READ_ONLY if cmd.readonly else encoder.READ_WRITE)


def _creatable(name: str) -> str:
    name = mailboxes.normalize(name)
    if not mailboxes.valid(name):
        raise Refusal(replies.BAD_NAME)
    return name


@command("CREATE", needs=Needs.AUTHENTICATED)
async def create(session: Session, cmd: Create) -> Reply:
    name = _creatable(cmd.mailbox)
    if name == mailstore.INBOX:
        raise Refusal(replies.MAILBOX_EXISTS)
    use = cmd.special_use[0] if cmd.special_use else None
    if use is not None and use not in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                                       "\\Trash"):
        raise Refusal(Reply("NO", "unknown special-use attribute", Code("USEATTR")))
    await mailstore.create_mailbox(session.ctx.pool, account_id(session), name, use)
    return replies.completed(cmd.name)


@command("DELETE", needs=Needs.AUTHENTICATED)
async def delete(session: Session, cmd: MailboxCommand) -> Reply:
    name = mailboxes.normalize(cmd.mailbox)
    if name == mailstore.INBOX:
        raise Refusal(replies.CANNOT)
    deleted = await mailstore.delete_mailbox(session.ctx.pool, account_id(session), name)
    # the selected mailbox is known by id (its name may have changed since, by another session's RENAME):
    # deleting it in this session deselects it, with no BYE (that is for another session's DELETE)
    if session.selected is not None and session.selected.mailbox.id == deleted:
        session.deselect()
    return replies.completed(cmd.name)


@command("RENAME", needs=Needs.AUTHENTICATED)
async def rename(session: Session, cmd: Rename) -> Reply:
    old = mailboxes.normalize(cmd.old)
    new = _creatable(cmd.new)
    await mailstore.rename_mailbox(session.ctx.pool, account_id(session), old, new)
    return replies.completed(cmd.name)


@command("SUBSCRIBE", "UNSUBSCRIBE", needs=Needs.AUTHENTICATED)
async def subscribe(session: Session, cmd: MailboxCommand) -> Reply:
    await mailstore.set_subscribed(session.ctx.pool, account_id(session), mailboxes.normalize(cmd.mailbox),
                                   cmd.name == "SUBSCRIBE")
    return replies.completed(cmd.name)


@command("LIST", "LSUB", needs=Needs.AUTHENTICATED)
async def list_(session: Session, cmd: List) -> Reply:
    if cmd.name == "LIST" and len(cmd.patterns) == 1 and cmd.patterns[0] == "":
        # RFC 3501 §6.3.8: the hierarchy delimiter and root
        session.send(encoder.list_response(["\\Noselect"], mailstore.DELIMITER, ""))
        return replies.completed(cmd.name)
    if any(i not in _STATUS_ITEMS for i in cmd.status_items):
        raise Refusal(replies.BAD_ITEMS)
    boxes = await mailstore.list_mailboxes(session.ctx.pool, account_id(session))
    parents = mailboxes.child_index(boxes)
    patterns = [mailboxes.matcher(cmd.reference, p) for p in cmd.patterns]
    only_subscribed = "SUBSCRIBED" in cmd.selection
    only_special = "SPECIAL-USE" in cmd.selection
    show_subscribed = cmd.extended and ("SUBSCRIBED" in cmd.returns or only_subscribed)
    for box in boxes:
        if not any(p.match(box.name) for p in patterns):
            continue
        if (only_subscribed and not box.subscribed) or (only_special and not box.special_use):
            continue
        attrs = mailboxes.attributes(box, parents, show_subscribed)
        if cmd.name == "LSUB":
            attrs = [a for a in attrs if not a.startswith("\\Has")]
        session.send(encoder.list_response(attrs, mailstore.DELIMITER, box.name, kind=cmd.name))
        if cmd.status_items:
            await _send_status(session, box, cmd.status_items)
    return replies.completed(cmd.name)


# RFC 9208: each account has one quota root, named "", over all its mailboxes; STORAGE counts KiB.
QUOTA_ROOT = ""


def _quota(used: int, limit: int) -> bytes:
    """The QUOTA response of the account's root (STORAGE in KiB: used rounded up, the limit down)."""
    return encoder.untagged(encoder.Atom("QUOTA"), QUOTA_ROOT, [encoder.Atom("STORAGE"), -(-used // 1024),
                                                               limit // 1024])


@command("GETQUOTAROOT", needs=Needs.AUTHENTICATED)
async def getquotaroot(session: Session, cmd: MailboxCommand) -> Reply:
    """RFC 9208 §4.3: the mailbox's roots (ours, or none for an account without a quota), then each
    root's QUOTA."""
    box = await find(session, cmd.mailbox)
    used, limit = await accounts.storage_use(session.ctx.pool, account_id(session))
    roots: list[encoder.Value] = [] if limit is None else [QUOTA_ROOT]
    session.send(encoder.untagged(encoder.Atom("QUOTAROOT"), encoder.Atom(encoder.mailbox(box.name)), *roots))
    if limit is not None:
        session.send(_quota(used, limit))
    return replies.completed(cmd.name)


@command("GETQUOTA", needs=Needs.AUTHENTICATED)
async def getquota(session: Session, cmd: GetQuota) -> Reply:
    """RFC 9208 §4.2: the limits of a root; a root that does not exist (any but "", or "" without a
    quota) is NO."""
    if cmd.root != QUOTA_ROOT:
        raise Refusal(replies.NO_SUCH_QUOTA_ROOT)
    used, limit = await accounts.storage_use(session.ctx.pool, account_id(session))
    if limit is None:
        raise Refusal(replies.NO_SUCH_QUOTA_ROOT)
    session.send(_quota(used, limit))
    return replies.completed(cmd.name)


@command("NAMESPACE", needs=Needs.AUTHENTICATED)
async def namespace(session: Session, cmd: Simple) -> Reply:
    # RFC 2342: one personal namespace, no others
    session.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return replies.completed(cmd.name)


_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ")


async def _send_status(session: Session, box: Mailbox, items: tuple[str, ...]) -> None:
    status = await mailstore.mailbox_status(session.ctx.pool, box.id)
    values: list[encoder.Value] = []
    for item in items:
        values += [encoder.Atom(item), getattr(status, item.lower())]
    session.send(encoder.untagged(encoder.Atom("STATUS"), encoder.Atom(encoder.mailbox(box.name)), values))


@command("STATUS", needs=Needs.AUTHENTICATED)
async def status(session: Session, cmd: Status) -> Reply:
    if any(i not in _STATUS_ITEMS for i in cmd.items):
        raise Refusal(replies.BAD_ITEMS)
    box = await find(session, cmd.mailbox)
    await _send_status(session, box, cmd.items)
    return replies.completed(cmd.name)


@command("APPEND", needs=Needs.AUTHENTICATED)
async def append(session: Session, cmd: Append) -> Reply:
    # the mailbox's id is kept per session (a client appending many messages looks it up once); the
    # store checks that the id still has that name, and on a miss it is looked up again
    name = mailboxes.normalize(cmd.mailbox)
    box = session.append_boxes.get(name)
    if box is None:
        box = await find(session, cmd.mailbox, replies.TRY_CREATE)
    if any(not msg.message for msg in cmd.messages):
        raise Refusal(replies.EMPTY_MESSAGE)  # before storing any: RFC 3502 §6.3.11, all or none
    summaries = [await _summarize(msg.message) for msg in cmd.messages]
    keywords = mailstore.keywords_of([f for msg in cmd.messages for f in msg.flags])
    if len(cmd.messages) == 1:
        box, validity, uid = await _append_one(session, session.ctx.pool, box, cmd, 0, summaries[0])
        uids = [uid]
    else:
        # several messages (MULTIAPPEND): one transaction, so a refusal or failure of any stores none
        uids = []
        async with session.ctx.pool.acquire() as conn, conn.transaction():
            for i, summary in enumerate(summaries):
                box, validity, uid = await _append_one(session, conn, box, cmd, i, summary)
                uids.append(uid)
    session.append_boxes[name] = box
    session.known_keywords.setdefault(box.id, set()).update(keywords)
    return replies.completed(cmd.name, Code.appenduid(validity, uids))


async def _summarize(raw: bytes) -> object:
    """The message's precomputed parts; a big one off the event loop."""
    if len(raw) > SUMMARIZE_IN_THREAD_ABOVE:
        return await asyncio.to_thread(summarize, raw)
    return summarize(raw)


async def _append_one(session: Session, conn: mailstore.Conn, box: Mailbox, cmd: Append, index: int,
                      summary: object) -> tuple[Mailbox, int, int]:
    """Store message `index` of `cmd`; returns (mailbox, uidvalidity, uid). A stale cached mailbox
    (renamed or deleted since) is looked up again by name once."""
    msg = cmd.messages[index]
    flags = [f for f in msg.flags if f != "\\Recent"]

    def unknown(box: Mailbox) -> set[str]:
        return mailstore.keywords_of(flags) - session.known_keywords.get(box.id, set())

    try:
        validity, uid = await mailstore.append(conn, box.id, msg.message, summary, flags, msg.date, box.name,
                                               check_keywords=unknown(box))
    except mailstore.MailboxNotFound:
        session.append_boxes.pop(mailboxes.normalize(cmd.mailbox), None)
        box = await find(session, cmd.mailbox, replies.TRY_CREATE)
        validity, uid = await mailstore.append(conn, box.id, msg.message, summary, flags, msg.date, box.name,
                                               check_keywords=unknown(box))
    return box, validity, uid


@command("ENABLE", needs=Needs.AUTHENTICATED)
async def enable(session: Session, cmd: Enable) -> Reply:
    session.send(b"* ENABLED\r\n")  # RFC 5161: nothing we offer needs enabling yet
    return replies.completed(cmd.name)


@command("IDLE", needs=Needs.AUTHENTICATED)
async def idle(session: Session, cmd: Simple) -> None:
    session.begin_idle(cmd.tag)
    await session.sync(allow_expunge=True)
