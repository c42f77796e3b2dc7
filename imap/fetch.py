"""FETCH: which stored columns a request needs, and each message's response, streamed.

Owns turning FETCH items into data from what was stored at delivery: ENVELOPE, BODYSTRUCTURE and
BODY as precomputed wire text, header fields cut from the stored `header` column (never from `raw`),
and body sections as byte ranges of the served message, which is `header_prefix || raw` (the
per-recipient Return-Path/Delivered-To lines first). Part ranges come from the stored part offsets, so
`BODY[1.2]` is a slice, never a MIME parse. Messages are read in batches; small ones come with their
raw bytes in the batch, large ones are streamed in chunks, so memory stays bounded whatever the
mailbox holds. Must not: touch sockets (it writes to the session's transport) or parse MIME.
"""

from __future__ import annotations

import asyncio
import re
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from imap import encoder
from imap.commands import FetchAtt, Section
from imap.replies import Abort
from mailcore.mime import headerfields
from mailcore.mime.headerfields import SYNC_FIELDS
from storage import mailstore

if TYPE_CHECKING:
    from imap.session import Session

RAW_INLINE_BELOW = 256 * 1024  # smaller messages come with their batch; larger ones are streamed
STREAM_CHUNK = 1024 * 1024
BATCH_WITH_BODIES = 32
BATCH_WITHOUT_BODIES = 250
STREAMED_BATCH = 1000  # rows per query (and per write) of a streamed FETCH: about 1 MB of headers
MIN_SHARED_BATCH = 100  # a FETCH of fewer than twice this many is built on one connection

_SIMPLE_COLUMNS = {
    "INTERNALDATE": ("internal_date",),
    "RFC822.SIZE": ("size", "prefix"),
    "ENVELOPE": ("envelope",),
    "BODYSTRUCTURE": ("bodystructure",),
    "BODY": ("body",),
    "MODSEQ": ("modseq",),
}
SUPPORTED = frozenset({"UID", "FLAGS", "RFC822", "RFC822.HEADER", "RFC822.TEXT", *_SIMPLE_COLUMNS})


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) of the served message (header_prefix || raw)."""

    start: int
    end: int


@dataclass(frozen=True)
class FieldsOf:
    """Header fields picked from a span (HEADER.FIELDS[.NOT] of an encapsulated message)."""

    span: Span
    names: frozenset[str]
    exclude: bool


Source = bytes | Span | FieldsOf


class Plan:
    """What a FETCH needs from the store, decided once per command."""

    def __init__(self, atts: list[FetchAtt]) -> None:
        self.atts = atts
        columns: set[str] = set()
        self.needs_raw = False
        for att in atts:
            columns.update(_SIMPLE_COLUMNS.get(att.name, ()))
            if att.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT") or att.section is not None:
                columns.update(("size", "prefix", "header", "body_offset"))
                section = _section_of(att)
                if section.part:
                    columns.add("parts")  # a JSON list: decoded only when a part is asked for
                if not (section.text or "").startswith("HEADER") or section.part:
                    self.needs_raw = True
        self.columns = sorted(columns)
        self.batch = BATCH_WITH_BODIES if self.needs_raw else BATCH_WITHOUT_BODIES


def _section_of(att: FetchAtt) -> Section:
    if att.name == "RFC822.HEADER":
        return Section((), "HEADER")
    if att.name == "RFC822.TEXT":
        return Section((), "TEXT")
    if att.name == "RFC822":
        return Section()
    assert att.section is not None
    return att.section


def item_name(att: FetchAtt) -> bytes:
    """The item's name in the response (RFC 3501 §7.4.2 `BODY[section]<origin>`), its header field names
    as the astrings the grammar makes them (§9 header-fld-name): the names a client sent quoted or as
    a literal went back as their bare text, so "a b" read as two names, "x)y" or "x]y" ended the list
    or the section early, and a literal's CR LF ended the response line in the middle of the name."""
    section = att.section
    if section is None or not section.fields or all(_ATOM.fullmatch(f) for f in section.fields):
        return att.response_name().encode("utf-8")
    names = b" ".join(f.encode("ascii") if _ATOM.fullmatch(f) else encoder.string(f) for f in section.fields)
    out = b"%s[%s (%s)]" % (att.name.encode("ascii"), str(replace(section, fields=())).encode("utf-8"), names)
    if att.partial is not None:
        out += b"<%d>" % att.partial[0]
    return out


# RFC 3501 §9 ATOM-CHAR but '[' and '}': a name sent bare. Not `encoder.astring`, which leaves ']' bare (an
# ASTRING-CHAR) where it would end the section.
_ATOM = re.compile(r"[!#$&'+-Z^-z|~]+")


def header_fields(block: bytes, names: frozenset[str], exclude: bool) -> bytes:
    """The fields of a header block named in `names` (lower case), or all others when `exclude`,
    as they appear (folding kept), then the blank line (RFC 3501 §6.4.5 HEADER.FIELDS)."""
    return headerfields.pick(block, names, exclude)


def _part(row: dict[str, Any], number: tuple[int, ...]) -> dict[str, Any] | None:
    key = ".".join(str(n) for n in number)
    for p in row["parts"] or ():
        if p.get("number") == key:
            return p
    return None


def section_source(row: dict[str, Any], section: Section) -> Source:
    """Where a section's bytes are, in the served message."""
    prefix: bytes = row["prefix"]
    pl = len(prefix)
    text = section.text
    names = frozenset(f.lower() for f in section.fields)
    if not section.part:
        if text is None:
            return Span(0, pl + row["size"])
        if text == "TEXT":
            return Span(pl + row["body_offset"], pl + row["size"])
        head = prefix + row["header"]
        if text == "HEADER":
            return head
        return header_fields(head, names, text == "HEADER.FIELDS.NOT")
    part = _part(row, section.part)
    if part is None:
        return b""
    if text is None:
        return Span(pl + part["body_start"], pl + part["body_end"])
    if text == "MIME":
        return Span(pl + part["header_start"], pl + part["body_start"])
    inner = part.get("message_body_start")
    if inner is None:  # HEADER/TEXT only exist for an encapsulated message (RFC 3501 §6.4.5)
        return b""
    if text == "TEXT":
        return Span(pl + inner, pl + part["body_end"])
    head = Span(pl + part["body_start"], pl + inner)
    if text == "HEADER":
        return head
    return FieldsOf(head, names, text == "HEADER.FIELDS.NOT")


def _narrow(span: Span, partial: tuple[int, int] | None) -> Span:
    if partial is None:
        return span
    start = min(span.start + partial[0], span.end)
    return Span(start, min(start + partial[1], span.end))


class Message:
    """One row's served bytes: prefix, header and (when loaded) raw; spans outside them are read
    from the store in chunks."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.prefix: bytes = row.get("prefix") or b""
        self.raw: bytes | None = row.get("raw")

    def local(self, span: Span) -> bytes | None:
        """The span's bytes when they are in memory (prefix and header, or a loaded raw)."""
        pl = len(self.prefix)
        if span.end <= pl:
            return self.prefix[span.start : span.end]
        header: bytes = self.row.get("header") or b""
        if self.raw is None and span.end > pl + len(header):
            return None
        body = self.raw if self.raw is not None else header
        if span.start >= pl:
            return body[span.start - pl : span.end - pl]
        return self.prefix[span.start:] + body[: span.end - pl]

    def raw_pieces(self, span: Span) -> Iterator[tuple[int, int]]:
        """(raw offset, length) reads covering the part of `span` past the prefix."""
        pl = len(self.prefix)
        pos = max(span.start, pl) - pl
        end = span.end - pl
        while pos < end:
            n = min(STREAM_CHUNK, end - pos)
            yield pos, n
            pos += n


async def write_message(session: Session, seq: int, row: dict[str, Any], atts: list[FetchAtt]) -> None:
    """Send `* seq FETCH (...)` for one row, streaming large sections from the store."""
    out = session.transport
    sel = session.selected
    assert sel is not None
    msg = Message(row)
    head: list[bytes | memoryview] = [b"* %d FETCH (" % seq]
    for i, att in enumerate(atts):
        if i:
            head.append(b" ")
        head.append(item_name(att) + b" ")
        name = att.name
        if name == "UID":
            head.append(b"%d" % row["uid"])
        elif name == "FLAGS":
            head.append(encoder.flag_list(sel.flags_with_recent(row["uid"], list(row["flags"]))))
        elif name == "INTERNALDATE":
            head.append(encoder.date_time(row["internal_date"]))
        elif name == "RFC822.SIZE":
            head.append(b"%d" % (row["size"] + len(row["prefix"])))
        elif name in ("ENVELOPE", "BODYSTRUCTURE", "BODY") and att.section is None:
            text = row[name.lower()]
            head.append(text.encode("utf-8") if text else b"NIL")
        elif name == "MODSEQ":
            head.append(b"(%d)" % row["modseq"])
        else:
            source = section_source(row, _section_of(att))
            if isinstance(source, FieldsOf):
                block = msg.local(source.span)
                if block is None:
                    block = b"".join([await mailstore.read_raw(session.ctx.pool, row["message_id"], off, n)
                                      for off, n in msg.raw_pieces(source.span)])
                source = header_fields(block, source.names, source.exclude)
            if isinstance(source, bytes):
                if att.partial is not None:
                    source = source[att.partial[0] : att.partial[0] + att.partial[1]]
                head.append(b"{%d}\r\n" % len(source))
                head.append(source)
                continue
            span = _narrow(source, att.partial)
            data = msg.local(span)
            head.append(b"{%d}\r\n" % (span.end - span.start))
            if data is not None:
                head.append(data)
                continue
            # a large message: send what we have, then the span in chunks read from the store
            out.write(b"".join(head))
            head = []
            pl = len(msg.prefix)
            if span.start < pl:
                out.write(msg.prefix[span.start : min(span.end, pl)])
            for off, n in msg.raw_pieces(span):
                chunk = await mailstore.read_raw(session.ctx.pool, row["message_id"], off, n)
                if len(chunk) != n:
                    # expunged by another session (and its bytes freed) since this FETCH read its row:
                    # the literal is announced, and neither padding nor a reply may follow. Dovecot too
                    # disconnects when a FETCH fails midway (cmd-fetch.c: "BYE is preferrable").
                    raise Abort(f"message {row['message_id']} vanished while it was sent")
                out.write(chunk)
                await out.drain()
    head.append(b")\r\n")
    out.write(b"".join(head))


class Streamed:
    """A FETCH whose every item the store hands over in wire form (a header sync): each message is
    one `%` format of one row, a batch one write. None of the per-message parsing of `write_message`.

    Items: UID, FLAGS, RFC822.SIZE, MODSEQ, INTERNALDATE, ENVELOPE, BODYSTRUCTURE, BODY, and
    BODY[.PEEK][HEADER.FIELDS (...)] without a part or a partial when the names are among
    `SYNC_FIELDS` (precomputed at delivery)."""

    def __init__(self, fmt: bytes, columns: list[str], kinds: list[tuple[str, int, frozenset[str] | None]],
                 wire: list[tuple[str, str]] | None = None):
        self.fmt = fmt
        self.columns = columns
        self.kinds = kinds
        # the same response as `mailstore.fetch_wire_batch` pieces, when the database can build it
        # (no INTERNALDATE, full SYNC_FIELDS): a batch is then one bytea, not rows to format
        self.wire = wire


_WIRE_ITEMS = {"RFC822.SIZE": ("size", b"%d"), "MODSEQ": ("modseq", b"(%d)"), "ENVELOPE": ("envelope", b"%s"),
               "BODYSTRUCTURE": ("bodystructure", b"%s"), "BODY": ("body", b"%s")}


def streamed(atts: list[FetchAtt]) -> Streamed | None:
    """The streamed form of a FETCH, or None when some item needs `write_message`."""
    fmt = [b"* %d FETCH ("]
    columns: list[str] = []
    kinds: list[tuple[str, int, frozenset[str] | None]] = []
    wire: list[tuple[str, str]] | None = [("literal", "* "), ("text", "seq"), ("literal", " FETCH (")]
    for i, att in enumerate(atts):
        name = att.response_name()
        fmt.append((b" " if i else b"") + name.encode("utf-8").replace(b"%", b"%%") + b" ")
        if wire is not None:
            wire.append(("literal", (" " if i else "") + name + " "))
        section = att.section
        if att.name == "UID":
            fmt.append(b"%d")
            kinds.append(("uid", 0, None))
            if wire is not None:
                wire.append(("text", "uid"))
        elif att.name == "FLAGS":
            fmt.append(b"(%s)")
            kinds.append(("flags", len(columns) + 1, None))
            columns.append("flags")
            if wire is not None:
                wire += [("literal", "("), ("text", "flags"), ("literal", ")")]
        elif att.name == "INTERNALDATE":
            fmt.append(b"%s")
            kinds.append(("date", len(columns) + 1, None))
            columns.append("internal_date")
            wire = None
        elif att.name in _WIRE_ITEMS and section is None:
            column, form = _WIRE_ITEMS[att.name]
            fmt.append(form)
            kinds.append(("value", len(columns) + 1, None))
            columns.append(column)
            if wire is not None:
                before, _, after = form.decode().partition("%")
                wire += [("literal", before), ("text", column), ("literal", after[1:])]
        elif (att.name == "BODY" and section is not None and not section.part and att.partial is None
              and section.text == "HEADER.FIELDS"):
            names = frozenset(f.lower() for f in section.fields)
            if not names <= SYNC_FIELDS:
                return None
            fmt.append(b"{%d}\r\n%s")
            kinds.append(("fields", len(columns) + 1, None if names == SYNC_FIELDS else names))
            columns += ["sync_fields", "sync_fallback"]
            if names != SYNC_FIELDS:
                wire = None
            elif wire is not None:
                wire += [("literal", "{"), ("text", "sync_fields_length"), ("literal", "}\r\n"),
                         ("bytes", "sync_fields")]
        else:
            return None
    fmt.append(b")\r\n")
    if wire is not None:
        wire.append(("literal", ")\r\n"))
    return Streamed(b"".join(fmt), columns, kinds, wire)


async def write_streamed(session: Session, plan: Streamed, uids: Sequence[int]) -> int:
    """Send the FETCH responses for `uids` (ascending, known to the session) in batches: one query,
    one write and one drain per batch, so memory stays bounded whatever the mailbox holds. Returns how
    many were sent (fewer than `uids` when another session expunged some)."""
    sel = session.selected
    assert sel is not None
    known = sel.uids
    pool = session.ctx.pool
    # one connection for the whole FETCH: no pool release (and reset) between batches
    async with pool.acquire() as conn:
        spare = await _spare(pool) if plan.wire is not None and len(uids) >= 2 * MIN_SHARED_BATCH else None
        # with a second connection, at least two batches (a 1,000-message folder is built in two halves)
        size = STREAMED_BATCH if spare is None else min(STREAMED_BATCH, -(-len(uids) // 2))
        batches: list[tuple[Sequence[int], int, bool]] = []
        for i in range(0, len(uids), size):
            batch = uids[i : i + size]
            start = bisect_left(known, batch[0])
            # contiguous (a range scan): the view holds exactly this batch from `start`
            batches.append((batch, start, known[start : start + len(batch)] == batch))
        try:
            return await _write_batches(session, plan, batches, [conn] if spare is None else [conn, spare])
        finally:
            if spare is not None:
                await pool.release(spare)


async def _spare(pool: Any) -> Any:
    """A second connection, only when one is idle: taken at once (the pool's queue is not empty) or not
    at all, so a session holding one connection never waits for another and sessions cannot starve
    each other of connections."""
    if pool.get_idle_size() < 1:
        return None
    return await pool.acquire()


async def _write_batches(session: Session, plan: Streamed, batches: list[tuple[Sequence[int], int, bool]],
                         conns: list[Any]) -> int:
    """The batches in order; returns how many messages were sent. With two connections the database
    builds the next batch while this one is built or sent (two backends, two cores): a large header
    sync is bound by the database's time."""
    sel = session.selected
    assert sel is not None
    out = session.transport

    async def build(i: int) -> bytes | None:
        """Batch i as the database builds it, on connection i mod n; None: format it here instead."""
        batch, start, contiguous = batches[i]
        if plan.wire is None or not contiguous or not sel.recent.isdisjoint(batch):
            return None
        data, built = await mailstore.fetch_wire_batch(conns[i % len(conns)], sel.mailbox.id, plan.wire,
                                                       batch[0], batch[-1], start + 1)
        return data if built == len(batch) else None  # a message without sync_fields: format here

    ahead: deque[asyncio.Task[bytes | None]] = deque()
    sent = 0
    try:
        for i, (batch, start, contiguous) in enumerate(batches):
            if len(conns) == 1:
                data = await build(i)
            else:
                while len(ahead) < len(conns) and i + len(ahead) < len(batches):
                    ahead.append(asyncio.create_task(build(i + len(ahead))))
                data = await ahead.popleft()
            if data is None:  # its connection is free: the batch in flight uses the other one
                sent += await _write_rows(session, plan, conns[i % len(conns)], batch, start, contiguous)
                continue
            out.write(data)
            sent += len(batch)  # built whole (`build` checks the count)
            await out.drain()
    finally:
        for task in ahead:
            task.cancel()
        if ahead:
            await asyncio.gather(*ahead, return_exceptions=True)
    return sent


async def _write_rows(session: Session, plan: Streamed, conn: Any, batch: Sequence[int], start: int,
                      contiguous: bool) -> int:
    """One batch formatted here from its rows (the general case of `write_streamed`); returns how many
    messages it sent."""
    sel = session.selected
    assert sel is not None
    known = sel.uids
    recent = sel.recent
    out = session.transport
    fmt = plan.fmt
    kinds = plan.kinds
    rows = await mailstore.fetch_wire(conn, sel.mailbox.id, plan.columns, batch[0], batch[-1],
                                      None if contiguous else batch)
    chunks: list[bytes] = []
    k = start
    n = len(known)
    for row in rows:
        uid = row[0]
        if k == n or known[k] != uid:  # rows follow the view in order: usually the next UID is the next row
            k = bisect_left(known, uid, k)
            if k == n or known[k] != uid:
                continue  # stored after this session's view: announced later, not fetched now
        args: list[object] = [k + 1]
        for kind, col, names in kinds:
            if kind == "uid":
                args.append(uid)
            elif kind == "value":
                args.append(row[col])
            elif kind == "flags":
                flags = row[col]
                if uid in recent:
                    flags = flags + b" \\Recent" if flags else b"\\Recent"
                args.append(flags)
            elif kind == "fields":
                block = row[col]
                if block is None:  # stored before sync_fields existed
                    block = header_fields(row[col + 1], names or SYNC_FIELDS, False)
                elif names is not None:
                    block = header_fields(block, names, False)
                args.append(len(block))
                args.append(block)
            else:  # date
                args.append(encoder.date_time(row[col]))
        chunks.append(fmt % tuple(args))
        k += 1
    if chunks:
        out.write(b"".join(chunks))
    await out.drain()
    return len(chunks)
