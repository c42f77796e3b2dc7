"""Modified UTF-7 for IMAP mailbox names (RFC 3501 §5.1.3).

Owns: encoding Unicode names for the wire and decoding them, strictly: anything RFC 3501 forbids
(a bare "&" run that is not base64, non-minimal encodings, printable ASCII encoded, unterminated
shifts, padding bits) raises ValueError. Must not: do I/O or know about mailboxes.
"""

from __future__ import annotations

import base64
import binascii


def _b64(text: str) -> str:
    data = text.encode("utf-16-be")
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Encode a Unicode mailbox name: printable ASCII as is, "&" as "&-", the rest as &...-."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def decode(name: str | bytes) -> str:
    """Decode a modified UTF-7 name; raises ValueError on anything RFC 3501 §5.1.3 forbids."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("mailbox name is not 7-bit ASCII") from None
    out: list[str] = []
    i, n = 0, len(name)
    run_end = -1  # where the last non-empty base64 run ended
    while i < n:
        ch = name[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError(f"character {ch!r} must be encoded in modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        start = i
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated '&' shift in mailbox name")
        chunk = name[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if any(not (c.isascii() and (c.isalnum() or c in "+,")) for c in chunk):
            raise ValueError("invalid character in modified base64")
        if len(chunk) % 4 == 1:
            raise ValueError("truncated modified base64")
        try:
            data = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4), validate=True)
        except binascii.Error:
            raise ValueError("invalid modified base64") from None
        if len(data) % 2:
            raise ValueError("modified base64 is not whole UTF-16 units")
        # compared as bytes: re-encoding text would raise on a lone surrogate, reported below
        if base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") != chunk:
            raise ValueError("non-canonical modified base64 (padding bits set)")
        try:
            text = data.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError("unpaired UTF-16 surrogate in mailbox name") from None
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise ValueError("printable ASCII must not be base64-encoded")
        if start == run_end:
            raise ValueError("adjacent encoded runs must be merged")
        run_end = i
        out.append(text)
    return "".join(out)

