"""The mail store as IMAP sees it: mailboxes, their messages, flags, expunges, copies and appends.

Owns every SQL statement the IMAP server runs (search criteria are compiled in `storage.mailsearch`).
Each write is one transaction that first locks the mailbox row and takes the next modseq from it, so
modseqs commit in order per mailbox and `changes_since` can hand a session a consistent view of what
happened (RFC 7162's bookkeeping kept now, before CONDSTORE is offered). Every write also sends
`NOTIFY mailbox_changes` so sessions in any process wake up.
Must not: know IMAP syntax, sequence numbers or sessions; build SQL from names or search strings.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from storage.accounts import delete_unreferenced
from storage.delivery import MAILBOX_CHANNEL, MESSAGE_COLUMNS, MESSAGE_PARAMS, message_values

INBOX = "INBOX"
DELIMITER = "/"
SEEN = "\\Seen"
DELETED = "\\Deleted"

Conn = asyncpg.Connection | asyncpg.Pool


class MailStoreError(Exception):
    """A refused mailbox operation; subclasses name the reason, the protocol picks the reply."""


class MailboxNotFound(MailStoreError):
    pass


class MailboxExists(MailStoreError):
    pass


class MailboxHasChildren(MailStoreError):
    pass


class CannotModify(MailStoreError):
    """INBOX cannot be deleted, or renamed to / into itself."""


class OverQuota(MailStoreError):
    pass


class TooManyMailboxes(MailStoreError):
    """The account would have more than MAX_MAILBOXES mailboxes."""


class TooManyKeywords(MailStoreError):
    """The keywords would take the mailbox past MAX_KEYWORDS distinct ones."""


class MessagesExpunged(MailStoreError):
    """Some of the entries named no longer exist (expunged by another session): nothing was done."""


class _NothingToDo(Exception):
    """Rolls back a transaction that turned out to change nothing (no modseq is spent)."""


@dataclass(frozen=True)
class Mailbox:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool


@dataclass(frozen=True)
class MailboxStatus:
    messages: int
    unseen: int
    recent: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int


@dataclass(frozen=True)
class Snapshot:
    """What SELECT needs: the mailbox, its UIDs in order, and the first unseen UID."""

    mailbox: Mailbox
    uids: Sequence[int]  # ascending; read only (from `storage.snapshots`, the cache's own array)
    first_unseen_uid: int | None
    keywords: list[str]
    recent_from: int | None = None  # UIDs from this one are \Recent for the session that claimed them


@dataclass(frozen=True)
class Changes:
    """What changed in a mailbox after a modseq, as one consistent view (up to `highestmodseq`)."""

    highestmodseq: int
    updated: list[tuple[int, list[str], int]] = field(default_factory=list)  # (uid, flags, modseq)
    expunged: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CopyResult:
    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]
    keywords: list[str] = field(default_factory=list)  # the copied entries' keywords (when checked)


MAILBOX_COLUMNS = "id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed"


def mailbox_from_row(row: asyncpg.Record) -> Mailbox:
    return Mailbox(**{k: row[k] for k in Mailbox.__dataclass_fields__})


def parents_of(name: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b"]."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


async def _notify(conn: asyncpg.Connection, mailbox_id: int) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", MAILBOX_CHANNEL, str(mailbox_id))


@contextlib.asynccontextmanager
async def _transaction(conn: Conn) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on `conn` (a connection from it when it is a pool; a savepoint inside a caller's)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c, c.transaction():
            yield c
    else:
        async with conn.transaction():
            yield conn


# The distinct keywords of a mailbox's entries: entries with system flags only are skipped cheaply.
_KEYWORDS_IN_USE = (
    "SELECT COALESCE(array_agg(DISTINCT f), '{}') FROM mailbox_messages mm, unnest(mm.flags) f"
    " WHERE mm.mailbox_id = $1 AND NOT mm.flags <@ $2::text[] AND left(f, 1) <> '\\'"
)


def keywords_of(flags: Collection[str]) -> set[str]:
    """The keywords (user flags) among `flags`."""
    return {f for f in flags if not f.startswith("\\")}


async def _check_keywords(conn: asyncpg.Connection, mailbox_id: int, keywords: Collection[str]) -> None:
    """Refuse `keywords` (TooManyKeywords) when those the mailbox does not carry yet would take it past
    MAX_KEYWORDS. The mailbox row is locked first, as every writer of its entries does, so two sessions
    adding keywords at once are counted one after the other. Reads every entry with a keyword: callers
    check only keywords they do not know to be in the mailbox already (the session keeps those)."""
    await conn.execute("SELECT FROM mailboxes WHERE id = $1 FOR UPDATE", mailbox_id)
    in_use = set(await conn.fetchval(_KEYWORDS_IN_USE, mailbox_id, _SYSTEM_FLAGS))
    new = set(keywords) - in_use
    if new and len(in_use) + len(new) > MAX_KEYWORDS:
        raise TooManyKeywords(str(mailbox_id))


async def _lock(conn: asyncpg.Connection, mailbox_id: int) -> asyncpg.Record:
    """Lock the mailbox row and take the next modseq (committed in order with the lock)."""
    row = await conn.fetchrow(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1"
        " RETURNING account_id, highestmodseq, uidvalidity, uidnext", mailbox_id)
    if row is None:
        raise MailboxNotFound(str(mailbox_id))
    return row


# --- mailboxes -------------------------------------------------------------------------------------------

async def list_mailboxes(conn: Conn, account_id: int) -> list[Mailbox]:
    """Every mailbox of the account, by name."""
    rows = await conn.fetch(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = $1 ORDER BY name",
                            account_id)
    return [mailbox_from_row(r) for r in rows]


async def get_mailbox(conn: Conn, account_id: int, name: str) -> Mailbox | None:
    row = await conn.fetchrow(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = $1 AND name = $2",
                              account_id, name)
    return mailbox_from_row(row) if row else None


# Mailboxes an account may have. Nothing else bounded them: one CREATE of a 512-character name makes up to
# 256 (its parents), and a client looping on CREATE filled the table and every LIST. Generous for people
# (Thunderbird starts with 6); a quota counts bytes, not rows.
MAX_MAILBOXES = 10_000


async def _check_mailbox_count(conn: asyncpg.Connection, account_id: int, adding: int) -> None:
    """Refuse (TooManyMailboxes) `adding` more mailboxes beyond MAX_MAILBOXES. The account row is locked
    first, so concurrent CREATEs of one account are counted in turn."""
    await conn.execute("SELECT FROM accounts WHERE id = $1 FOR UPDATE", account_id)
    count = await conn.fetchval("SELECT count(*) FROM mailboxes WHERE account_id = $1", account_id)
    if count + adding > MAX_MAILBOXES:
        raise TooManyMailboxes(str(account_id))


async def create_mailbox(pool: asyncpg.Pool, account_id: int, name: str, special_use: str | None = None) -> int:
    """Create `name` and any missing parents (RFC 3501 §6.3.3); refuse an existing name, and more
    than MAX_MAILBOXES for the account."""
    async with pool.acquire() as conn, conn.transaction():
        await _check_mailbox_count(conn, account_id, len(parents_of(name)) + 1)
        for parent in parents_of(name):
            await conn.execute(
                "INSERT INTO mailboxes (account_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                account_id, parent)
        mailbox_id = await conn.fetchval(
            "INSERT INTO mailboxes (account_id, name, special_use) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING id", account_id, name, special_use)
        if mailbox_id is None:
            raise MailboxExists(name)
        return mailbox_id


async def delete_mailbox(pool: asyncpg.Pool, account_id: int, name: str) -> int:
    """Delete a mailbox and its messages; returns the id it had. INBOX and mailboxes with children are
    refused."""
    if name == INBOX:
        raise CannotModify(name)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2 FOR UPDATE",
                                  account_id, name)
        if row is None:
            raise MailboxNotFound(name)
        if await conn.fetchval("SELECT 1 FROM mailboxes WHERE account_id = $1 AND left(name, length($2) + 1)"
                               " = $2 || '/'", account_id, name):
            raise MailboxHasChildren(name)
        entries = await conn.fetch(
            "SELECT mm.message_id, m.size FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
            " WHERE mm.mailbox_id = $1", row["id"])
        await conn.execute("DELETE FROM mailboxes WHERE id = $1", row["id"])
        await _release(conn, account_id, [e["message_id"] for e in entries], sum(e["size"] for e in entries))
        await _notify(conn, row["id"])
    return row["id"]


async def _release(conn: asyncpg.Connection, account_id: int, message_ids: list[int], size: int) -> None:
    if size:
        await conn.execute("UPDATE accounts SET used_bytes = GREATEST(0, used_bytes - $2) WHERE id = $1",
                           account_id, size)
    await delete_unreferenced(conn, sorted(set(message_ids)))


async def rename_mailbox(pool: asyncpg.Pool, account_id: int, old: str, new: str) -> None:
    """Rename a mailbox with its children. Renaming INBOX moves its messages to a new mailbox and
    leaves INBOX empty; INBOX's children stay (RFC 3501 §6.3.5)."""
    if new == INBOX or new == old or new.startswith(old + DELIMITER):
        raise CannotModify(new)
    async with pool.acquire() as conn, conn.transaction():
        src = await conn.fetchrow("SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2 FOR UPDATE",
                                  account_id, old)
        if src is None:
            raise MailboxNotFound(old)
        if await conn.fetchval("SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2", account_id, new):
            raise MailboxExists(new)
        await _check_mailbox_count(conn, account_id, len(parents_of(new)) + (old == INBOX))
        for parent in parents_of(new):
            await conn.execute(
                "INSERT INTO mailboxes (account_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                account_id, parent)
        if old == INBOX:
            dest = await conn.fetchval("INSERT INTO mailboxes (account_id, name) VALUES ($1, $2) RETURNING id",
                                       account_id, new)
            uids = [r["uid"] for r in await conn.fetch(
                "SELECT uid FROM mailbox_messages WHERE mailbox_id = $1 ORDER BY uid", src["id"])]
            if uids:
                await _copy_in(conn, src["id"], dest, uids, move=True)
            return
        await conn.execute(
            "UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1)"
            " WHERE account_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')",
            account_id, old, new)


async def set_subscribed(conn: Conn, account_id: int, name: str, subscribed: bool) -> None:
    status = await conn.execute("UPDATE mailboxes SET subscribed = $3 WHERE account_id = $1 AND name = $2",
                                account_id, name, subscribed)
    if status == "UPDATE 0":
        raise MailboxNotFound(name)


async def mailbox_status(conn: Conn, mailbox_id: int) -> MailboxStatus:
    row = await conn.fetchrow(
        "SELECT b.uidnext, b.uidvalidity, b.highestmodseq, count(mm.uid) AS messages,"
        " count(mm.uid) FILTER (WHERE NOT ($2 = ANY(mm.flags))) AS unseen,"
        " count(mm.uid) FILTER (WHERE mm.uid >= b.recent_uid) AS recent,"
        " COALESCE(sum(m.size + length(mm.header_prefix)), 0) AS size"
        " FROM mailboxes b LEFT JOIN mailbox_messages mm ON mm.mailbox_id = b.id"
        " LEFT JOIN messages m ON m.id = mm.message_id"
        " WHERE b.id = $1 GROUP BY b.id", mailbox_id, SEEN)
    if row is None:
        raise MailboxNotFound(str(mailbox_id))
    return MailboxStatus(**dict(row))


# --- a selected mailbox ----------------------------------------------------------------------------------

# SELECT in one statement (one snapshot, so no explicit transaction): the mailbox row, its UIDs in order,
# the first unseen, the sets of flags that carry keywords (few distinct ones however many messages;
# messages with system flags only are skipped cheaply) and, with $4, \Recent claimed up to the highest
# UID read. The claim locks and writes the mailbox row only when there is something to claim (a warm
# SELECT writes nothing, so waits for no WAL flush); `old` is the row as locked (the newest version),
# as in `claim_recent`. $2 \Seen, $3 the system flags.
_SELECT = (
    f"WITH box AS (SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1),"
    " entries AS (SELECT COALESCE(array_agg(uid ORDER BY uid), '{}') AS uids, max(uid) + 1 AS upto,"
    "  min(uid) FILTER (WHERE NOT ($2 = ANY(flags))) AS first_unseen,"
    "  array_agg(DISTINCT array_to_string(flags, ' ')) FILTER (WHERE NOT flags <@ $3::text[]) AS flag_sets"
    "  FROM mailbox_messages WHERE mailbox_id = $1),"
    " claim AS (UPDATE mailboxes b SET recent_uid = GREATEST(old.recent_uid, entries.upto)"
    "  FROM entries, (SELECT recent_uid FROM mailboxes WHERE id = $1 AND $4::boolean"
    "                 AND recent_uid < (SELECT upto FROM entries) FOR UPDATE) old"
    "  WHERE b.id = $1 AND old.recent_uid < entries.upto RETURNING old.recent_uid)"
    " SELECT box.*, entries.uids, entries.first_unseen, entries.flag_sets,"
    " COALESCE((SELECT recent_uid FROM claim), entries.upto) AS recent_from FROM box, entries"
)
_SYSTEM_FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]
# Distinct keywords a mailbox may carry: each is listed in FLAGS (and PERMANENTFLAGS) at every SELECT, so a
# client storing thousands grew every SELECT of every client. Cyrus's limit is 128 (MAX_USER_FLAGS);
# Thunderbird's tags and junk marks use a handful. STORE, APPEND and COPY/MOVE refuse a new one beyond it.
MAX_KEYWORDS = 100


async def snapshot(conn: Conn, mailbox_id: int, claim_recent: bool = False) -> Snapshot:
    """The mailbox and its UIDs, read in one consistent view; with `claim_recent`, this session's
    \\Recent messages claimed (`Snapshot.recent_from`) in the same statement."""
    row = await conn.fetchrow(_SELECT, mailbox_id, SEEN, _SYSTEM_FLAGS, claim_recent)
    if row is None:
        raise MailboxNotFound(str(mailbox_id))
    keywords = sorted({f for flags in row["flag_sets"] or () for f in flags.split(" ") if f[:1] != "\\"})
    return Snapshot(mailbox_from_row(row), row["uids"], row["first_unseen"], keywords[:MAX_KEYWORDS],
                    row["recent_from"] if claim_recent else None)


async def claim_recent(conn: Conn, mailbox_id: int, upto_uid: int) -> int:
    """Claim \\Recent for UIDs below `upto_uid` not yet claimed; return the first claimed UID."""
    return await conn.fetchval(
        "UPDATE mailboxes b SET recent_uid = GREATEST(old.recent_uid, $2)"
        " FROM (SELECT recent_uid FROM mailboxes WHERE id = $1 FOR UPDATE) old"
        " WHERE b.id = $1 RETURNING old.recent_uid", mailbox_id, upto_uid) or upto_uid


async def changes_since(pool: asyncpg.Pool, mailbox_id: int, modseq: int) -> Changes | None:
    """Entries changed or added, and UIDs expunged, after `modseq`; None if the mailbox is gone."""
    async with pool.acquire() as conn:
        highest = await conn.fetchval("SELECT highestmodseq FROM mailboxes WHERE id = $1", mailbox_id)
        if highest is None:
            return None
        if highest <= modseq:
            return Changes(highest)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            highest = await conn.fetchval("SELECT highestmodseq FROM mailboxes WHERE id = $1", mailbox_id)
            rows = await conn.fetch(
                "SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = $1 AND modseq > $2"
                " ORDER BY uid", mailbox_id, modseq)
            gone = await conn.fetch("SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid",
                                    mailbox_id, modseq)
    return Changes(highest, [(r["uid"], list(r["flags"]), r["modseq"]) for r in rows], [r["uid"] for r in gone])


# What FETCH may ask for, by name: fixed column expressions, never built from client input.
FETCH_COLUMNS: dict[str, str] = {
    "internal_date": "mm.internal_date",
    "modseq": "mm.modseq",
    "size": "m.size",
    "prefix": "mm.header_prefix",
    "header": "m.header",
    "body_offset": "m.body_offset",
    "envelope": "m.envelope",
    "bodystructure": "m.bodystructure",
    "body": "m.body",
    "parts": "m.parts",
}


async def fetch_entries(conn: Conn, mailbox_id: int, uids: Sequence[int], columns: Sequence[str],
                        raw_below: int | None = None) -> list[dict[str, Any]]:
    """Rows for `uids` (ascending) with uid, flags, message_id and the named `FETCH_COLUMNS`;
    with `raw_below`, also `raw` for messages smaller than that (larger ones: `read_raw`)."""
    cols = ["mm.uid", "mm.flags", "mm.message_id"] + [f"{FETCH_COLUMNS[c]} AS {c}" for c in columns]
    args: list[Any] = [mailbox_id, list(uids)]
    if raw_below is not None:
        cols.append("CASE WHEN m.size < $3 THEN m.raw END AS raw")
        args.append(raw_below)
    rows = await conn.fetch(
        f"SELECT {', '.join(cols)} FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) ORDER BY mm.uid", *args)
    out = []
    for r in rows:
        d = dict(r)
        if "parts" in d and isinstance(d["parts"], str):
            d["parts"] = json.loads(d["parts"])
        out.append(d)
    return out


# FETCH's streaming path: values the store can hand over already in wire form (bytes), by name.
WIRE_COLUMNS: dict[str, str] = {
    "flags": "convert_to(array_to_string(mm.flags, ' '), 'UTF8')",
    "size": "m.size + length(mm.header_prefix)",
    "modseq": "mm.modseq",
    "internal_date": "mm.internal_date",
    "envelope": "convert_to(COALESCE(NULLIF(m.envelope, ''), 'NIL'), 'UTF8')",
    "bodystructure": "convert_to(COALESCE(NULLIF(m.bodystructure, ''), 'NIL'), 'UTF8')",
    "body": "convert_to(COALESCE(NULLIF(m.body, ''), 'NIL'), 'UTF8')",
    "sync_fields": "m.sync_fields",
    # the served header, only for messages stored before sync_fields existed
    "sync_fallback": "CASE WHEN m.sync_fields IS NULL THEN mm.header_prefix || m.header END",
}


async def fetch_wire(conn: Conn, mailbox_id: int, columns: Sequence[str], first_uid: int, last_uid: int,
                     uids: Sequence[int] | None = None) -> list[asyncpg.Record]:
    """Records (uid, then the named `WIRE_COLUMNS` in order) of the entries with UIDs in
    [first_uid, last_uid], or only those in `uids` when given; ascending by UID."""
    cols = ", ".join(["mm.uid"] + [WIRE_COLUMNS[c] for c in columns])
    sql = (f"SELECT {cols} FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
           " WHERE mm.mailbox_id = $1 AND mm.uid BETWEEN $2 AND $3")
    if uids is None:
        return await conn.fetch(sql + " ORDER BY mm.uid", mailbox_id, first_uid, last_uid)
    return await conn.fetch(sql + " AND mm.uid = ANY($4::bigint[]) ORDER BY mm.uid", mailbox_id, first_uid,
                            last_uid, list(uids))


# `fetch_wire_batch` pieces: values as text (then UTF-8) or as bytes, by name
WIRE_TEXT: dict[str, str] = {
    "seq": "($4::bigint + row_number() OVER (ORDER BY mm.uid) - 1)::text",
    "uid": "mm.uid::text",
    "flags": "array_to_string(mm.flags, ' ')",
    "size": "(m.size + length(mm.header_prefix))::text",
    "modseq": "mm.modseq::text",
    "envelope": "COALESCE(NULLIF(m.envelope, ''), 'NIL')",
    "bodystructure": "COALESCE(NULLIF(m.bodystructure, ''), 'NIL')",
    "body": "COALESCE(NULLIF(m.body, ''), 'NIL')",
    "sync_fields_length": "length(m.sync_fields)::text",
}
WIRE_BYTES: dict[str, str] = {"sync_fields": "m.sync_fields"}


async def fetch_wire_batch(conn: Conn, mailbox_id: int, pieces: Sequence[tuple[str, str]], first_uid: int,
                           last_uid: int, first_seq: int) -> tuple[bytes, int]:
    """The entries with UIDs in [first_uid, last_uid], each as the concatenation of `pieces` (("literal",
    text), ("text", a WIRE_TEXT name) or ("bytes", a WIRE_BYTES name); "seq" numbers the entries from
    `first_seq` in UID order), all in one bytea built by the database, and how many entries it holds.
    An entry with a NULL piece (no sync_fields) is left out: fewer than expected means "format here"."""
    args: list[Any] = [mailbox_id, first_uid, last_uid, first_seq]
    exprs: list[str] = []
    text: list[str] = []
    for kind, value in pieces:
        if kind == "literal":
            args.append(value)
            text.append(f"${len(args)}::text")
        elif kind == "text":
            text.append(WIRE_TEXT[value])
        else:
            if text:
                exprs.append(f"convert_to({' || '.join(text)}, 'UTF8')")
                text = []
            exprs.append(WIRE_BYTES[value])
    if text:
        exprs.append(f"convert_to({' || '.join(text)}, 'UTF8')")
    row = await conn.fetchrow(
        f"SELECT string_agg(b, ''::bytea ORDER BY uid), count(b) FROM (SELECT mm.uid, {' || '.join(exprs)} AS b"
        " FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " WHERE mm.mailbox_id = $1 AND mm.uid BETWEEN $2 AND $3) s", *args)
    return row[0] or b"", row[1]


async def read_raw(conn: Conn, message_id: int, offset: int, length: int) -> bytes:
    """`length` bytes of a stored message from `offset` (for streaming large bodies in chunks)."""
    return await conn.fetchval("SELECT substring(raw FROM $2 FOR $3) FROM messages WHERE id = $1",
                               message_id, offset + 1, length) or b""


async def store_flags(pool: Conn, mailbox_id: int, uids: Sequence[int], mode: str, flags: Sequence[str],
                      check_keywords: Collection[str] = ()) -> tuple[int | None, list[tuple[int, list[str]]]]:
    """Set (`set`), add (`add`) or remove (`remove`) flags on `uids`. Returns the modseq given to the
    changed entries (None if none changed) and the current (uid, flags) of every entry in `uids`.

    One statement (its implicit transaction commits as it returns). The mailbox row is locked, and a
    modseq taken, only when some entry needs the change (as seen when the statement starts); the
    entries' condition is checked again on the rows as locked, so a concurrent change that made ours
    needless can at worst leave a modseq unused. Entries it did not change are reported as it read them.
    With `check_keywords` (keywords the caller does not know to be in the mailbox), TooManyKeywords when
    they would take it past MAX_KEYWORDS; the check and the change are then one transaction."""
    change = {
        "set": "ARRAY(SELECT DISTINCT f FROM unnest($3::text[]) f ORDER BY f)",
        "add": "ARRAY(SELECT DISTINCT f FROM unnest(mm.flags || $3::text[]) f ORDER BY f)",
        "remove": "ARRAY(SELECT f FROM unnest(mm.flags) f WHERE NOT f = ANY($3::text[]) ORDER BY f)",
    }[mode]
    needs = {
        "set": "NOT (mm.flags @> $3::text[] AND $3::text[] @> mm.flags)",
        "add": "NOT (mm.flags @> $3::text[])",
        "remove": "mm.flags && $3::text[]",
    }[mode]
    sql = (
        "WITH lock AS (UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 AND EXISTS"
        f"  (SELECT FROM mailbox_messages mm WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) AND {needs})"
        "  RETURNING highestmodseq),"
        f" changed AS (UPDATE mailbox_messages mm SET flags = {change}, modseq = lock.highestmodseq FROM lock"
        f"  WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) AND {needs} RETURNING mm.uid, mm.flags, mm.modseq)"
        " SELECT mm.uid, COALESCE(changed.flags, mm.flags) AS flags, changed.modseq,"
        "  (SELECT pg_notify($4, $1::text) WHERE EXISTS (SELECT FROM changed)) IS NOT NULL AS notified"
        " FROM mailbox_messages mm LEFT JOIN changed ON changed.uid = mm.uid"
        " WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) ORDER BY mm.uid")
    args = (mailbox_id, list(uids), sorted(set(flags)), MAILBOX_CHANNEL)
    if check_keywords and mode != "remove":
        async with _transaction(pool) as conn:
            await _check_keywords(conn, mailbox_id, check_keywords)
            rows = await conn.fetch(sql, *args)
    else:
        rows = await pool.fetch(sql, *args)
    modseq = next((r["modseq"] for r in rows if r["modseq"] is not None), None)
    return modseq, [(r["uid"], list(r["flags"])) for r in rows]


async def expunge(pool: asyncpg.Pool, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
    """Remove the \\Deleted entries (only those in `uids` if given); return the expunged UIDs."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                lock = await _lock(conn, mailbox_id)
                rows = await conn.fetch(
                    "DELETE FROM mailbox_messages mm USING messages m WHERE m.id = mm.message_id"
                    " AND mm.mailbox_id = $1 AND $2 = ANY(mm.flags)"
                    " AND ($3::bigint[] IS NULL OR mm.uid = ANY($3::bigint[]))"
                    " RETURNING mm.uid, mm.message_id, m.size",
                    mailbox_id, DELETED, None if uids is None else list(uids))
                if not rows:
                    raise _NothingToDo
                await _log_expunged(conn, mailbox_id, [r["uid"] for r in rows], lock["highestmodseq"])
                await _release(conn, lock["account_id"], [r["message_id"] for r in rows],
                               sum(r["size"] for r in rows))
                await _notify(conn, mailbox_id)
        except _NothingToDo:
            return []
    return sorted(r["uid"] for r in rows)


async def _log_expunged(conn: asyncpg.Connection, mailbox_id: int, uids: list[int], modseq: int) -> None:
    await conn.execute(
        "INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, u, $3 FROM unnest($2::bigint[]) u"
        " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq", mailbox_id, uids, modseq)


async def copy(pool: asyncpg.Pool, source_id: int, uids: Sequence[int], dest_id: int,
               move: bool = False, known_keywords: Collection[str] | None = None) -> CopyResult:
    """Copy (or move) entries to another mailbox of the same account in one transaction.
    Flags and internal dates are kept; UIDs are new in the destination (COPYUID, RFC 4315).
    All or none: MessagesExpunged, with nothing copied, when some of `uids` no longer exist.
    With `known_keywords` (those the caller knows the destination carries), TooManyKeywords when the
    entries' other keywords would take the destination past MAX_KEYWORDS."""
    async with pool.acquire() as conn, conn.transaction():
        return await _copy_in(conn, source_id, dest_id, list(uids), move, known_keywords)


async def _copy_in(conn: asyncpg.Connection, source_id: int, dest_id: int, uids: list[int],
                   move: bool, known_keywords: Collection[str] | None = None) -> CopyResult:
    # Both mailbox rows locked in id order, as delivery does: no deadlock between COPY a->b and b->a.
    owners = {r["id"]: r["account_id"] for r in await conn.fetch(
        "SELECT id, account_id FROM mailboxes WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
        [source_id, dest_id])}
    rows = await conn.fetch(
        "SELECT mm.uid, mm.message_id, m.size FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) ORDER BY mm.uid", source_id, uids)
    if len(rows) != len(set(uids)):
        # Read after the source row's lock, which every expunge takes first: what is missing is gone.
        # RFC 9051 §6.4.7: a COPY that fails leaves the destination as it was; Dovecot (cmd-copy.c)
        # copies none of them either and answers NO [EXPUNGEISSUED].
        raise MessagesExpunged(str(source_id))
    dest = await _lock(conn, dest_id)
    if not rows:
        return CopyResult(dest["uidvalidity"], [], [])
    keywords: list[str] = []
    if known_keywords is not None:
        keywords = list(await conn.fetchval(
            "SELECT COALESCE(array_agg(DISTINCT f), '{}') FROM mailbox_messages mm, unnest(mm.flags) f"
            " WHERE mm.mailbox_id = $1 AND mm.uid = ANY($2::bigint[]) AND left(f, 1) <> '\\'", source_id, uids))
        if set(keywords) - set(known_keywords):
            await _check_keywords(conn, dest_id, keywords)
    size = sum(r["size"] for r in rows)
    if not move:
        await _charge(conn, dest["account_id"], size)
    first = await conn.fetchval("UPDATE mailboxes SET uidnext = uidnext + $2 WHERE id = $1 RETURNING uidnext - $2",
                                dest_id, len(rows))
    src_uids = [r["uid"] for r in rows]
    await conn.execute(
        "INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, header_prefix, internal_date, modseq)"
        " SELECT $1, $2 + u.ord - 1, mm.message_id, mm.flags, mm.header_prefix, mm.internal_date, $3"
        " FROM unnest($5::bigint[]) WITH ORDINALITY AS u(uid, ord)"
        " JOIN mailbox_messages mm ON mm.mailbox_id = $4 AND mm.uid = u.uid",
        dest_id, first, dest["highestmodseq"], source_id, src_uids)
    if owners.get(source_id) != dest["account_id"]:  # the header SEARCH index's key (migration 0014)
        await conn.execute("UPDATE messages SET accounts = array_append(accounts, $1::bigint) WHERE id = ANY($2::bigint[])"
                           " AND NOT accounts @> ARRAY[$1::bigint]", dest["account_id"], [r["message_id"] for r in rows])
    await _notify(conn, dest_id)
    if move:
        src = await _lock(conn, source_id)
        await conn.execute("DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])",
                           source_id, src_uids)
        await _log_expunged(conn, source_id, src_uids, src["highestmodseq"])
        await _notify(conn, source_id)
    return CopyResult(dest["uidvalidity"], src_uids, list(range(first, first + len(rows))), keywords)


async def _charge(conn: asyncpg.Connection, account_id: int, size: int) -> None:
    """Count `size` more bytes against the account's quota, refusing to go over it."""
    row = await conn.fetchrow(
        "UPDATE accounts SET used_bytes = used_bytes + $2 WHERE id = $1"
        " AND (quota_bytes IS NULL OR used_bytes + $2 <= quota_bytes) RETURNING used_bytes", account_id, size)
    if row is None:
        raise OverQuota(str(account_id))


# APPEND in one statement, so its implicit transaction commits (durably) as it returns: one round trip
# instead of six (BEGIN, lock, message, entry, COMMIT and the pool's reset). $1..$17 the message
# (`message_values`), $18 the mailbox id, $19 the name it must still have (or NULL), $20 the flags,
# $21 the internal date (or NULL: now), $22 the notification channel. The mailbox row is locked first,
# then the account's, as a delivery does. `box` takes a UID only when the quota allows the message (as
# seen at the start of the statement); `charge` checks the quota again on the locked account row, and
# nothing is stored without it: only a concurrent delivery filling the quota in between can leave a UID
# unused, a gap RFC 3501 §2.3.1.1 allows.
_APPEND = (
    "WITH box AS ("
    "  UPDATE mailboxes b SET highestmodseq = b.highestmodseq + 1, uidnext = b.uidnext + 1 FROM accounts a"
    "  WHERE b.id = $18 AND ($19::text IS NULL OR b.name = $19) AND a.id = b.account_id"
    "  AND (a.quota_bytes IS NULL OR a.used_bytes + $2::integer <= a.quota_bytes)"
    "  RETURNING b.account_id, b.highestmodseq, b.uidvalidity, b.uidnext - 1 AS uid"
    "), charge AS ("
    "  UPDATE accounts a SET used_bytes = a.used_bytes + $2::integer FROM box WHERE a.id = box.account_id"
    "  AND (a.quota_bytes IS NULL OR a.used_bytes + $2::integer <= a.quota_bytes) RETURNING a.id"
    "), msg AS ("
    f"  INSERT INTO messages (accounts, {MESSAGE_COLUMNS}) SELECT ARRAY[charge.id], {MESSAGE_PARAMS} FROM charge"
    "  RETURNING id"
    "), entry AS ("
    "  INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, internal_date, modseq)"
    "  SELECT $18, box.uid, msg.id, $20::text[], COALESCE($21::timestamptz, now()), box.highestmodseq"
    "  FROM box, msg"
    ")"
    " SELECT box.uidvalidity, box.uid, msg.id IS NOT NULL AS stored,"
    " CASE WHEN msg.id IS NOT NULL THEN pg_notify($22::text, $18::text) END"
    " FROM box LEFT JOIN msg ON true"
)


async def append(pool: Conn, mailbox_id: int, raw: bytes, summary: Any, flags: Sequence[str],
                 internal_date: datetime | None, name: str | None = None,
                 check_keywords: Collection[str] = ()) -> tuple[int, int]:
    """Store a message given by a client into a mailbox; return (uidvalidity, uid) once it is durable.
    With `name`, the mailbox must still have that name (a caller's cached id may be stale): else
    MailboxNotFound. OverQuota when the account has no room for it. With `check_keywords` (keywords the
    caller does not know to be in the mailbox), TooManyKeywords when they would take it past MAX_KEYWORDS."""
    args = (*message_values(raw, summary), mailbox_id, name, sorted(set(flags)), internal_date, MAILBOX_CHANNEL)
    if check_keywords:
        async with _transaction(pool) as conn:
            await _check_keywords(conn, mailbox_id, check_keywords)
            row = await conn.fetchrow(_APPEND, *args)
    else:
        row = await pool.fetchrow(_APPEND, *args)
    if row is not None and row["stored"]:
        return row["uidvalidity"], row["uid"]
    # refused: nothing was stored; tell a vanished (or renamed) mailbox from a full account
    exists = await pool.fetchval("SELECT 1 FROM mailboxes WHERE id = $1 AND ($2::text IS NULL OR name = $2)",
                                 mailbox_id, name)
    if exists is None:
        raise MailboxNotFound(str(mailbox_id))
    raise OverQuota(str(mailbox_id))
