"""Header-field text we write, and the header block of messages we read.

It owns two small things every protocol shares: making a peer-supplied string safe to put in a header
field we generate (no CR, LF or NUL can reach the wire: header injection, as in CVE-2024-6923), and
splitting a raw message's header block into fields without altering a byte of them.
It must not parse MIME structure or decode encoded-words (that belongs to the MIME code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


def safe_header_value(value: str) -> str:
    """`value` with every run of control characters (CR, LF, NUL and the other C0 controls except
    TAB, and DEL) replaced by one space, so it cannot end a header line or start a new field."""
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
        return re.sub(r"\r?\n(?=[ \t])", "", text.decode("utf-8", "replace")).strip()


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
