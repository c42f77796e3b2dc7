"""The SQL behind the HTTP API's read endpoints: listings, one message, per-recipient status.

Owns queries only; every function takes the account id and returns nothing the account may not see, so
the API cannot forget an ownership check. Listings are keyset-paginated (newest first): a mailbox by UID,
which only grows and is never reused (RFC 3501 §2.3.1.1), sent mail by message id. No offsets: a page
costs the same however deep it is, and new mail arriving does not shift the pages.
It knows no HTTP and parses no MIME (the precomputed columns are enough for a summary).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.accounts import Conn


@dataclass(frozen=True)
class Filters:
    """Listing filters: only unread, only received at or after `since`, sender containing `sender`."""

    unread: bool = False
    since: datetime | None = None
    sender: str | None = None


@dataclass(frozen=True)
class Summary:
    """One line of a listing."""

    id: int
    uid: int | None
    mailbox: str | None
    flags: tuple[str, ...]
    date: datetime
    size: int
    subject: str | None
    from_addr: str | None
    to_addrs: str | None
    has_attachments: bool


_SUMMARY_COLS = ("m.id, m.size, m.subject, m.from_addr, m.to_addrs, m.has_attachments")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def find_mailbox(conn: Conn, account_id: int, name: str) -> tuple[int, str] | None:
    """(id, name) of an account's mailbox; INBOX matches case-insensitively (RFC 3501 §5.1)."""
    if name.upper() == "INBOX":
        name = "INBOX"
    row = await conn.fetchrow("SELECT id, name FROM mailboxes WHERE account_id = $1 AND name = $2",
                              account_id, name)
    return (row["id"], row["name"]) if row else None


async def list_mailbox(conn: Conn, account_id: int, mailbox: str, *, limit: int, before_uid: int | None,
                       filters: Filters) -> list[Summary] | None:
    """A page of a mailbox, newest first, UIDs below `before_uid`; None if there is no such mailbox."""
    found = await find_mailbox(conn, account_id, mailbox)
    if found is None:
        return None
    mailbox_id, name = found
    where = ["mm.mailbox_id = $1"]
    args: list[Any] = [mailbox_id]
    if before_uid is not None:
        args.append(before_uid)
        where.append(f"mm.uid < ${len(args)}")
    if filters.unread:
        where.append("NOT ('\\Seen' = ANY(mm.flags))")
    if filters.since is not None:
        args.append(filters.since)
        where.append(f"mm.internal_date >= ${len(args)}")
    if filters.sender:
        args.append(_like(filters.sender))
        where.append(f"m.from_addr ILIKE ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT mm.uid, mm.flags, mm.internal_date, {_SUMMARY_COLS}"
        " FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        f" WHERE {' AND '.join(where)} ORDER BY mm.uid DESC LIMIT ${len(args)}", *args)
    return [Summary(id=r["id"], uid=r["uid"], mailbox=name, flags=tuple(r["flags"]), date=r["internal_date"],
                    size=r["size"], subject=r["subject"], from_addr=r["from_addr"], to_addrs=r["to_addrs"],
                    has_attachments=r["has_attachments"]) for r in rows]


async def list_sent(conn: Conn, account_id: int, *, limit: int, before_id: int | None,
                    filters: Filters) -> list[Summary]:
    """A page of what the account sent, newest first, message ids below `before_id`."""
    where = ["s.account_id = $1"]
    args: list[Any] = [account_id]
    if before_id is not None:
        args.append(before_id)
        where.append(f"s.message_id < ${len(args)}")
    if filters.since is not None:
        args.append(filters.since)
        where.append(f"s.created_at >= ${len(args)}")
    if filters.sender:
        args.append(_like(filters.sender))
        where.append(f"m.from_addr ILIKE ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT s.created_at, {_SUMMARY_COLS} FROM sent_messages s JOIN messages m ON m.id = s.message_id"
        f" WHERE {' AND '.join(where)} ORDER BY s.message_id DESC LIMIT ${len(args)}", *args)
    return [Summary(id=r["id"], uid=None, mailbox=None, flags=(), date=r["created_at"], size=r["size"],
                    subject=r["subject"], from_addr=r["from_addr"], to_addrs=r["to_addrs"],
                    has_attachments=r["has_attachments"]) for r in rows]


@dataclass(frozen=True)
class StoredRaw:
    """One message as this account sees it: its bytes (with the per-recipient prefix when it is in one of
    the account's mailboxes) and where the account has it."""

    id: int
    raw: bytes
    received_at: datetime
    mailboxes: tuple[tuple[str, int, tuple[str, ...]], ...]  # (mailbox, uid, flags)
    sent: bool


async def get_message(conn: Conn, account_id: int, message_id: int) -> StoredRaw | None:
    """The message if the account holds it in a mailbox or sent it; else None (the same as absent)."""
    entries = await conn.fetch(
        "SELECT b.name, mm.uid, mm.flags, mm.header_prefix FROM mailbox_messages mm"
        " JOIN mailboxes b ON b.id = mm.mailbox_id WHERE b.account_id = $1 AND mm.message_id = $2"
        " ORDER BY b.name = 'INBOX' DESC, b.name, mm.uid", account_id, message_id)
    sent = bool(await _sent_by(conn, account_id, message_id))
    if not entries and not sent:
        return None
    row = await conn.fetchrow("SELECT raw, received_at FROM messages WHERE id = $1", message_id)
    if row is None:
        return None
    prefix = bytes(entries[0]["header_prefix"]) if entries else b""
    return StoredRaw(id=message_id, raw=prefix + bytes(row["raw"]), received_at=row["received_at"],
                     mailboxes=tuple((e["name"], e["uid"], tuple(e["flags"])) for e in entries), sent=sent)


async def _sent_by(conn: Conn, account_id: int, message_id: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM sent_messages WHERE account_id = $1 AND message_id = $2)"
        " OR EXISTS (SELECT 1 FROM queue WHERE account_id = $1 AND message_id = $2)", account_id, message_id))


@dataclass(frozen=True)
class RecipientStatus:
    """Where one recipient of a sent message stands."""

    recipient: str
    status: str  # delivered (local or remote), queued, deferred, bounced
    local: bool
    attempts: int
    last_error: str | None
    updated_at: datetime | None


async def message_status(conn: Conn, account_id: int, message_id: int) -> list[RecipientStatus] | None:
    """Per-recipient status of a message the account sent; None if it did not send it."""
    if not await _sent_by(conn, account_id, message_id):
        return None
    remote = await conn.fetch(
        "SELECT r.recipient, r.status, r.attempts, r.last_error, r.updated_at FROM queue_recipients r"
        " JOIN queue q ON q.id = r.queue_id WHERE q.message_id = $1 ORDER BY r.id", message_id)
    local = await conn.fetch(
        "SELECT recipient, min(at) AS at FROM delivery_log WHERE message_id = $1 AND event = 'delivered'"
        " AND queue_id IS NULL GROUP BY recipient ORDER BY min(id)", message_id)
    out = [RecipientStatus(r["recipient"], "delivered", True, 1, None, r["at"]) for r in local]
    for r in remote:
        status = "queued" if r["status"] == "pending" else r["status"]
        out.append(RecipientStatus(r["recipient"], status, False, r["attempts"], r["last_error"],
                                   r["updated_at"]))
    # A finished queue entry is gone; its recipients' outcomes live on in the delivery log.
    live = [r["recipient"] for r in remote]
    finished = await conn.fetch(
        "SELECT DISTINCT ON (recipient) recipient, event, detail, at,"
        " count(*) OVER (PARTITION BY recipient) AS attempts FROM delivery_log"
        " WHERE message_id = $1 AND queue_id IS NOT NULL AND event IN ('delivered', 'deferred', 'bounced')"
        " AND recipient <> ALL($2::text[]) ORDER BY recipient, id DESC", message_id, live)
    for r in finished:
        error = None if r["event"] == "delivered" else r["detail"]
        out.append(RecipientStatus(r["recipient"], r["event"], False, r["attempts"], error, r["at"]))
    return out


async def queue_stats(conn: Conn) -> tuple[int, float]:
    """(messages waiting in the queue, age in seconds of the oldest), for the metrics."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age"
        " FROM queue WHERE state <> 'done'")  # held entries wait too
    return int(row["n"]), float(row["age"])
