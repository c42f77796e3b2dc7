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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imap import encoder
from imap.commands import FetchAtt, Section
from storage import mailstore

if TYPE_CHECKING:
    from imap.session import Session

RAW_INLINE_BELOW = 256 * 1024  # smaller messages come with their batch; larger ones are streamed
STREAM_CHUNK = 1024 * 1024
BATCH_WITH_BODIES = 32
BATCH_WITHOUT_BODIES = 250

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
                columns.update(("size", "prefix", "header", "body_offset", "parts"))
                section = _section_of(att)
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


def header_fields(block: bytes, names: frozenset[str], exclude: bool) -> bytes:
    """The fields of a header block named in `names` (lower case), or all others when `exclude`,
    as they appear (folding kept), then the blank line (RFC 3501 §6.4.5 HEADER.FIELDS)."""
    out: list[bytes] = []
    keep = False
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        keep = (name in names) != exclude and b":" in line
        if keep:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


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
        head.append(att.response_name().encode("utf-8") + b" ")
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
                out.write(await mailstore.read_raw(session.ctx.pool, row["message_id"], off, n))
                await out.drain()
    head.append(b")\r\n")
    out.write(b"".join(head))
