"""Header fields picked from a header block (IMAP HEADER.FIELDS), and the set precomputed at delivery.

Owns the one implementation of "the fields of a header block with these names, folding kept, then the
blank line" (RFC 3501 §6.4.5), shared by delivery (which stores, per message, the fields mail clients
ask for when they sync headers, so a sync reads a small inline column instead of the whole header) and
by IMAP FETCH (any other HEADER.FIELDS list). Must not: do I/O or know IMAP syntax.
"""

from __future__ import annotations

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


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out
