"""IMAP response encoding: status replies, response codes, strings, lists and FETCH responses.

Owns: the wire form of everything the server says (RFC 3501 §7, RFC 9051 §7): quoting (a quoted
string when safe, else a literal), NIL, lists, flag lists, mailbox names (modified UTF-7), and
FETCH responses built as a list of byte chunks so a large body part is sent without being copied
into one big buffer. Must not: do I/O, or decide what to say (the session does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from imap import utf7
from imap.sequence import format_numbers

_MAX_QUOTED = 1000
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}


@dataclass(frozen=True, slots=True)
class Atom:
    """Sent as is: an atom, number or pre-encoded text (e.g. a stored BODYSTRUCTURE)."""

    text: str | bytes

    def encode(self) -> bytes:
        return self.text.encode("utf-8") if isinstance(self.text, str) else self.text


@dataclass(frozen=True, slots=True)
class Literal:
    """Always sent as a literal, content not copied (memoryview allowed). `binary` = literal8."""

    data: bytes | memoryview
    binary: bool = False


NIL = Atom("NIL")
Value = None | int | str | bytes | Atom | Literal | Sequence["Value"]


def quoted_ok(data: bytes) -> bool:
    """RFC 3501 §9 quoted: 7-bit TEXT-CHARs only, no CR/LF/NUL; we also cap the length."""
    return len(data) <= _MAX_QUOTED and data.isascii() and not any(c in data for c in b"\r\n\x00")


def string(value: str | bytes) -> bytes:
    """A quoted string when safe, else a literal `{n}\\r\\n...`."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if quoted_ok(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when it is one (RFC 3501 §9 astring), else a string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if data and data.isascii() and not any(c in _ATOM_SPECIALS for c in data if c != 0x5D):
        return data
    return string(data)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name: modified UTF-7 (RFC 3501 §5.1.3) unless UTF8=ACCEPT is on (RFC 6855)."""
    return astring(name if utf8 else utf7.encode(name))


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("utf-8") for f in flags) + b")"


def date_time(value: datetime) -> bytes:
    """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (INTERNALDATE)."""
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    return (
        f'"{value.day:02d}-{months[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


def encode_chunks(value: Value, out: list[bytes | memoryview]) -> None:
    """Append the wire form of `value` to `out`; large literals become their own chunk."""
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(value, int):
        out.append(b"%d" % value)
    elif isinstance(value, Atom):
        out.append(value.encode())
    elif isinstance(value, Literal):
        out.append(b"%s{%d}\r\n" % (b"~" if value.binary else b"", len(value.data)))
        out.append(value.data)
    elif isinstance(value, str | bytes):
        out.append(string(value))
    else:
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            encode_chunks(item, out)
        out.append(b")")


def encode(value: Value) -> bytes:
    out: list[bytes | memoryview] = []
    encode_chunks(value, out)
    return b"".join(out)


def _coalesce(chunks: list[bytes | memoryview], big: int = 16384) -> list[bytes | memoryview]:
    """Join small neighbouring chunks; leave big ones (message bodies) as they are."""
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for c in chunks:
        if len(c) >= big:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(c)
        else:
            small.append(c)
    if small:
        out.append(b"".join(small))
    return out


# ---- response codes (RFC 3501 §7.1, RFC 4315, RFC 5530) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Code:
    """A response code: `[text]`. Build with the constructors below."""

    text: str

    def __bytes__(self) -> bytes:
        return b"[" + self.text.encode("utf-8") + b"]"

    @staticmethod
    def uidnext(n: int) -> Code:
        return Code(f"UIDNEXT {n}")

    @staticmethod
    def uidvalidity(n: int) -> Code:
        return Code(f"UIDVALIDITY {n}")

    @staticmethod
    def unseen(n: int) -> Code:
        return Code(f"UNSEEN {n}")

    @staticmethod
    def highestmodseq(n: int) -> Code:
        return Code(f"HIGHESTMODSEQ {n}")

    @staticmethod
    def permanentflags(flags: Iterable[str]) -> Code:
        return Code("PERMANENTFLAGS " + flag_list(flags).decode("utf-8"))

    @staticmethod
    def capability(caps: Iterable[str]) -> Code:
        return Code("CAPABILITY " + " ".join(caps))

    @staticmethod
    def appenduid(validity: int, uids: Iterable[int]) -> Code:
        return Code(f"APPENDUID {validity} {format_numbers(uids)}")  # RFC 4315 §3

    @staticmethod
    def copyuid(validity: int, source: Iterable[int], dest: Iterable[int]) -> Code:
        return Code(f"COPYUID {validity} {format_numbers(source)} {format_numbers(dest)}")


# RFC 3501 §7.1 and RFC 5530 codes without arguments
ALERT = Code("ALERT")
PARSE = Code("PARSE")
READ_ONLY = Code("READ-ONLY")
READ_WRITE = Code("READ-WRITE")
TRYCREATE = Code("TRYCREATE")
UIDNOTSTICKY = Code("UIDNOTSTICKY")
UNAVAILABLE = Code("UNAVAILABLE")
AUTHENTICATIONFAILED = Code("AUTHENTICATIONFAILED")
AUTHORIZATIONFAILED = Code("AUTHORIZATIONFAILED")
PRIVACYREQUIRED = Code("PRIVACYREQUIRED")
CANNOT = Code("CANNOT")
LIMIT = Code("LIMIT")
OVERQUOTA = Code("OVERQUOTA")
ALREADYEXISTS = Code("ALREADYEXISTS")
NONEXISTENT = Code("NONEXISTENT")
INUSE = Code("INUSE")
SERVERBUG = Code("SERVERBUG")
CLIENTBUG = Code("CLIENTBUG")
EXPUNGEISSUED = Code("EXPUNGEISSUED")
TOOBIG = Code("TOOBIG")  # RFC 7889
NOPERM = Code("NOPERM")
CLOSED = Code("CLOSED")  # RFC 7162 §3.2.11


def _text_part(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")


def status(tag: str, kind: str, text: str, code: Code | str | None = None) -> bytes:
    """`tag OK|NO|BAD [code] text` (tag "*" for untagged); text never carries CR/LF."""
    assert kind in ("OK", "NO", "BAD", "BYE", "PREAUTH")
    if isinstance(code, str):
        code = Code(code)
    head = f"{tag} {kind} ".encode("ascii")
    return head + (bytes(code) + b" " if code is not None else b"") + _text_part(text) + b"\r\n"


def ok(tag: str, text: str, code: Code | str | None = None) -> bytes:
    return status(tag, "OK", text, code)


def no(tag: str, text: str, code: Code | str | None = None) -> bytes:
    return status(tag, "NO", text, code)


def bad(tag: str, text: str, code: Code | str | None = None) -> bytes:
    return status(tag, "BAD", text, code)


def bye(text: str, code: Code | str | None = None) -> bytes:
    return status("*", "BYE", text, code)


def continuation(text: str = "Ready") -> bytes:
    return b"+ " + _text_part(text) + b"\r\n"


def untagged(*parts: Value | Atom) -> bytes:
    """`* a b c`: each part encoded as a value; use `Atom` for keywords."""
    out: list[bytes | memoryview] = [b"*"]
    for p in parts:
        out.append(b" ")
        encode_chunks(p, out)
    out.append(b"\r\n")
    return b"".join(out)


def exists(n: int) -> bytes:
    return b"* %d EXISTS\r\n" % n


def expunge(n: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % n


def flags(names: Iterable[str]) -> bytes:
    return b"* FLAGS " + flag_list(names) + b"\r\n"


def list_response(
    attributes: Iterable[str], delimiter: str | None, name: str, kind: str = "LIST", utf8: bool = False,
    extended: Value = None,
) -> bytes:
    """`* LIST (\\HasNoChildren) "/" INBOX` (RFC 3501 §7.2.2), optional extended data (RFC 5258)."""
    delim = b"NIL" if delimiter is None else string(delimiter)
    line = b"* %s %s %s %s" % (kind.encode(), flag_list(attributes), delim, mailbox(name, utf8))
    if extended is not None:
        line += b" " + encode(extended)
    return line + b"\r\n"


def fetch(number: int, items: Sequence[tuple[str, Value]]) -> list[bytes | memoryview]:
    """`* n FETCH (name value ...)` as chunks; body literals are passed through uncopied.

    Items are (response name, value): e.g. ("UID", 5), ("FLAGS", Atom("(\\Seen)")),
    ("BODY[]", Literal(memoryview(raw))), ("ENVELOPE", Atom(summary.envelope)).
    """
    out: list[bytes | memoryview] = [b"* %d FETCH (" % number]
    for i, (name, value) in enumerate(items):
        out.append((" " if i else "").encode() + name.encode("utf-8") + b" ")
        encode_chunks(value, out)
    out.append(b")\r\n")
    return _coalesce(out)
