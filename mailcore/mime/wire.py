"""IMAP wire strings for the precomputed ENVELOPE and BODYSTRUCTURE text.

mailcore may not import `imap`, so the small quoting rule the stored text needs lives here.
The text it produces is a `str` that the IMAP layer sends encoded as UTF-8: every `{n}` literal
count below is the UTF-8 length of the literal's content. Bytes that are not valid UTF-8 are read
as `headers.text_of` reads them (Windows-1252, else Latin-1), so the stored text is always valid UTF-8
(and storable in PostgreSQL `text`) and says what the decoded subject and addresses say.
It must not decide what a value means; callers pass raw header bytes.
"""

from __future__ import annotations

import re

from mailcore.mime.headers import text_of, text_of_escaped

_MAX_QUOTED = 1000  # longer values go as literals, which no client mis-parses
_PLAIN = re.compile(r'[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*')  # ASCII but NUL, CR, LF, '"' and '\\'


def to_text(value: bytes) -> str:
    """Bytes of a header value as text, NUL dropped: UTF-8 when valid, else Windows-1252, else Latin-1.

    One reading for ENVELOPE, BODYSTRUCTURE and the decoded fields SEARCH and the API use: a raw 0x93
    from an old Windows mailer is a quotation mark in all of them, not a C1 control in the ENVELOPE
    (WHATWG's Encoding Standard reads Latin-1 labels as Windows-1252 for the same reason)."""
    return text_of(value.replace(b"\x00", b""))


def string(value: str | bytes) -> str:
    """An IMAP string: quoted when safe, else a literal.

    RFC 3501 §9: a quoted string holds 7-bit TEXT-CHARs without CR/LF; anything else is a literal.
    Text decoded with surrogateescape (a header's undecodable bytes) is read as those bytes are:
    it could not be sent as UTF-8 otherwise.
    """
    if isinstance(value, bytes):
        text = to_text(value)
    elif len(value) <= _MAX_QUOTED and _PLAIN.fullmatch(value):
        return '"' + value + '"'  # most values (types, parameters, encodings): one check, nothing to escape
    elif value.isascii():
        text = value.replace("\x00", "")
    else:
        text = text_of_escaped(value).replace("\x00", "")
    if (
        len(text) <= _MAX_QUOTED
        and text.isascii()
        and "\r" not in text
        and "\n" not in text
        and (text.count('"') + text.count("\\")) <= 8
    ):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{{{len(text.encode('utf-8'))}}}\r\n{text}"


def nstring(value: str | bytes | None) -> str:
    """NIL for None, else `string(value)`."""
    return "NIL" if value is None else string(value)


def plist(items: list[str]) -> str:
    """A parenthesised list of already-encoded items, or NIL when empty."""
    return "(" + " ".join(items) + ")" if items else "NIL"
