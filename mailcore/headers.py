"""Header-field text we write, and the header block of messages we read.

It owns two small things every protocol shares: making a peer-supplied string safe to put in a header
field we generate (no CR, LF or NUL can reach the wire: header injection, as in CVE-2024-6923), and
splitting a raw message's header block into fields without altering a byte of them (`split_header_block`;
`field_values` finds the fields of one name by the same rules without splitting the rest).
It must not parse MIME structure or decode encoded-words (that belongs to the MIME code).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # RFC 5322 §2.2.3: unfolding removes the CRLF before WSP


def safe_header_value(value: str) -> str:
    """`value` with every run of control characters (CR, LF, NUL and the other C0 controls except
    TAB, and DEL) replaced by one space, so it cannot end a header line or start a new field."""
    if value.isprintable():  # no control character at all (most values): nothing to replace
        return value
    return _UNSAFE.sub(" ", value)


@dataclass(frozen=True)
class HeaderField:
    """One header field as it appears in the message, folding and line ends included."""

    name: str     # as written (compare with .lower())
    raw: bytes    # the whole field: "Name: value\r\n\tcontinued\r\n"

    @property
    def value(self) -> str:
        """The unfolded value after the colon (RFC 5322 §2.2.3), decoded leniently."""
        text = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        return _FOLD.sub("", text.decode("utf-8", "replace")).strip()


def split_header_block(raw: bytes) -> tuple[list[HeaderField], bytes]:
    """The header fields of `raw` in order, and everything after them (the blank line and body).

    Lines that are neither a field nor a continuation (no colon) are kept as fields named "" so that
    joining every `raw` and the rest gives back `raw` exactly."""
    fields: list[HeaderField] = []
    pos = 0
    length = len(raw)
    while pos < length:
        end = raw.find(b"\n", pos)
        end = length if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.raw + line)
        else:
            name = line.split(b":", 1)[0].decode("ascii", "replace").strip() if b":" in line else ""
            fields.append(HeaderField(name, line))
        pos = end
    return fields, raw[pos:]


# split_header_block's rules, for finding the fields of one name without splitting the others:
# - the fields end before the first empty line (an LF, or CR LF, just after an LF), or with the message;
_FIELDS_END = re.compile(rb"\n\r?\n")
# - a field's name is what precedes the first colon of its first line, stripped of str.isspace characters
#   (only ASCII ones can occur: other bytes decode to U+FFFD) and compared in lower case;
_NAME_SPACE = rb"[ \t\x0b\x0c\r\x1c-\x1f]*"
# - a line starting with SP or HT continues the field before it, except the very first line.
_CONTINUATIONS = re.compile(rb"(?:\n[ \t][^\n]*)*\n?")


@functools.lru_cache(maxsize=32)
def _first_lines_of(name: str) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """(the first line of the message as such a field, the LF before any later one): searching from
    the LF lets re skip to each line start instead of trying every offset."""
    field = _NAME_SPACE + re.escape(name.encode("ascii")) + _NAME_SPACE + rb":"
    return re.compile(field, re.IGNORECASE), re.compile(rb"\n(?![ \t])" + field, re.IGNORECASE)


def field_values(raw: bytes, name: str) -> list[str]:
    """The `value` of every field of `raw` named `name` (ASCII, any case), exactly as
    `[f.value for f in split_header_block(raw)[0] if f.name.lower() == name.lower()]` gives them, without
    building a record for every other field or copying the body: DMARC's From (RFC 7489 §6.6.1) is
    looked up this way on every message received."""
    if raw.startswith((b"\n", b"\r\n")):
        return []
    end = _FIELDS_END.search(raw)
    stop = len(raw) if end is None else end.start() + 1
    first, later = _first_lines_of(name.lower())
    starts = [0] if first.match(raw, 0, stop) else []
    starts += [m.start() + 1 for m in later.finditer(raw, 0, stop)]
    values = []
    for start in starts:
        nl = raw.find(b"\n", start, stop)
        more = _CONTINUATIONS.match(raw, nl, stop) if nl >= 0 else None  # always matches: maybe nothing
        field_end = more.end() if more is not None else stop
        values.append(HeaderField(name, raw[start:field_end]).value)
    return values
