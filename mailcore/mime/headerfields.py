"""Header fields picked from a header block (IMAP HEADER.FIELDS), and the set precomputed at delivery.

Owns the one rule for "the fields of a header block with these names, folding kept, then the blank
line" (RFC 3501 §6.4.5), in two forms that give the same bytes: `pick` reads a header block as bytes
(IMAP FETCH of any HEADER.FIELDS list, over the stored header), `pick_parsed` slices the fields a
`HeaderBlock` already found (`summarize`, which stores per message the fields mail clients ask for when
they sync headers, `sync_fields`, without reading the header a second time). Must not: do I/O or
know IMAP syntax.
"""

from __future__ import annotations

from mailcore.mime.headers import HeaderBlock

# Thunderbird's header-sync list (mailnews.customDBHeaders unset), lower case. Stored per message in
# `messages.sync_fields`; a HEADER.FIELDS request for this set, or any subset of it, is served from there.
SYNC_FIELDS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "priority", "x-priority", "references",
    "newsgroups", "in-reply-to", "content-type", "reply-to",
})


def pick(block: bytes, names: frozenset[str], exclude: bool = False) -> bytes:
    """The fields of a header block named in `names` (lower case), or all others when `exclude`,
    as they appear (folding kept), then the blank line. Lines end at LF only (a lone CR is part of
    its line, as for SEARCH's header match), so a field's stored lines are exactly its raw lines."""
    out: list[bytes] = []
    keep = False
    for line in _lines(block):
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


def pick_parsed(raw: bytes, header: HeaderBlock, names: frozenset[str]) -> bytes:
    """What `pick(raw[start:header.body_start], names)` gives for the header block `header` that
    `parse_header(raw, start, ...)` found: the fields' own bytes, sliced where the parse saw them.

    The two agree because every line of such a block is a field, a continuation or its blank line
    (the parse ends the block before any other line); a first line without LF (the block ends the
    message) gets the CRLF `pick` gives it, a last continuation line without one stays as it is."""
    out: list[bytes] = []
    for (name, _), (start, end) in zip(header.fields, header.spans, strict=True):
        if name in names:
            text = raw[start:end]
            if text[-1:] != b"\n" and b"\n" not in text:
                text += b"\r\n"
            out.append(text)
    out.append(b"\r\n")
    return b"".join(out)


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out
