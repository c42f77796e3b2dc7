"""Header blocks over bytes: where a header ends, its fields, Content-Type parameters, encoded words.

Owns: finding the end of a header block in raw bytes (offsets preserved), unfolding fields,
MIME parameter lists with RFC 2231 continuations, and decoding RFC 2047 encoded words for display.
Must not: raise on any input, or decode bodies.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass, field

# RFC 5322 §3.6.8: field-name is printable ASCII but ':'; obs-optional allows WSP before ':'.
_FIELD = re.compile(rb"([^\x00-\x20\x7f:]+)[ \t]*:")


@dataclass(slots=True)
class HeaderBlock:
    """A parsed header block: fields in order, where each lies in the raw bytes, and where the body starts.

    `spans[i]` is where field i lies in the bytes parsed, from its name to the end of its last line
    (folding and line ends kept), so a caller that needs fields as they were written (IMAP
    HEADER.FIELDS, `mailcore.mime.headerfields.pick_parsed`) slices them instead of parsing the
    block again. Lookups by name go through a dict of first occurrences, built once: `summarize`
    asks a message's header for some twenty names. Not changed once built, though not frozen: a frozen
    dataclass sets each field through object.__setattr__, and one is built per MIME part."""

    fields: tuple[tuple[str, bytes], ...]  # (lower-cased name, unfolded raw value)
    body_start: int
    spans: tuple[tuple[int, int], ...] = ()  # (start, end) offsets of each field; empty when not parsed
    _first: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: dict[str, bytes] = {}
        for key, value in self.fields:
            first.setdefault(key, value)
        self._first = first

    def get(self, name: str) -> bytes | None:
        """The first field named `name` (lower case), unfolded, or None."""
        return self._first.get(name)

    def get_all(self, name: str) -> list[bytes]:
        return [value for key, value in self.fields if key == name]


_BLANK = (b"\r\n", b"\n", b"\r")
_WSP = (b" ", b"\t")


def parse_header(raw: bytes, start: int, limit: int) -> HeaderBlock:
    """Parse the header block starting at `start`, never reading at or past `limit`.

    The block ends after the first empty line (which it includes), or before the first line that
    is neither a field nor a continuation (a missing blank line, RFC 5322 §2.1 violated: the
    body starts at that line), or at `limit`.
    """
    fields: list[tuple[str, bytes]] = []
    spans: list[tuple[int, int]] = []
    pos = start
    current: list[bytes] | None = None
    name = ""
    begin = field_end = start
    while pos < limit:
        nl = raw.find(b"\n", pos, limit)
        end = limit if nl < 0 else nl + 1
        line = raw[pos:end]
        if line in _BLANK:
            pos = end
            break
        content = line.rstrip(b"\r\n")
        if content[:1] in _WSP:
            if current is not None:
                current.append(content)
                field_end = end
            pos = end
            continue
        m = _FIELD.match(content)
        if m is None:
            break  # not a header line: the body starts here
        if current is not None:
            fields.append((name, b"".join(current).strip(b" \t")))
            spans.append((begin, field_end))
        name = m.group(1).decode("latin-1").lower()
        current = [content[m.end():]]
        begin, field_end = pos, end
        pos = end
    if current is not None:
        fields.append((name, b"".join(current).strip(b" \t")))
        spans.append((begin, field_end))
    return HeaderBlock(tuple(fields), pos, tuple(spans))


# ---- tokens shared by Content-Type / Content-Disposition --------------------------------------


def strip_comments(text: str) -> str:
    """Remove RFC 5322 comments (nested) outside quoted strings."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and (quoted or depth) and i + 1 < len(text):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if quoted:
            out.append(ch)
            if ch == '"':
                quoted = False
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            pass
        else:
            out.append(ch)
            if ch == '"':
                quoted = True
        i += 1
    return "".join(out)


# One token of a parameter list: a quoted string (escapes kept, possibly unterminated: it then runs to the
# end), a lone backslash, a run of other characters, or the ';' that separates parameters.
_PARAM_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|\\|[^";\\]+|;', re.S)


def _split_params(text: str) -> list[str]:
    """Split at each ';' outside quoted strings. By tokens, not characters: a Content-Type with a quoted
    boundary is split in a third of the time of a loop over its characters (summarize splits several
    per message)."""
    if '"' not in text:  # nothing quoted (most Content-Types): every ';' separates
        return text.split(";")
    if "\\" not in text:
        # Without escapes, a ';' inside quotes leaves an odd number of '"' before it in its piece; when every
        # piece has an even number, no ';' was quoted (a quoted boundary, the common case: 5 -> 1 µs).
        pieces = text.split(";")
        if all(piece.count('"') % 2 == 0 for piece in pieces):
            return pieces
    parts: list[str] = []
    buf: list[str] = []
    for token in _PARAM_TOKEN.findall(text):
        if token == ";":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(token)
    parts.append("".join(buf))
    return parts


_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"':
        inner = value[1:-1] if value.endswith('"') else value[1:]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value


# RFC 2231 §3: name*0, name*1*. ASCII digits, at most 9: int() refuses a string of over 4,300 digits
# (a ValueError that made summarize raise, so the message was refused with 451 for ever), and no list of
# continuations needs an index past 999,999,999; a longer one is an ordinary parameter name.
_CONTINUATION = re.compile(r"([^*]+)\*([0-9]{1,9})(\*?)")


def parse_params(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split `value; a=b; c="d"` into the leading value and (lower-cased name, value) pairs.

    RFC 2231 §3-4: continuations `name*0`, `name*1*` are merged; when any piece is extended, the
    merged parameter is `name*` with value `charset'lang'%XX...` (still encoded, as clients expect).
    """
    pieces = _split_params(strip_comments(text))
    head = pieces[0].strip()
    simple: list[tuple[str, str]] = []
    continued: dict[str, dict[int, tuple[bool, str]]] = {}
    order: list[str] = []
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        key, _, value = piece.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        value = _unquote(value)
        m = _CONTINUATION.fullmatch(key) if "*" in key else None
        if m:
            base = m.group(1)
            if base not in continued:
                continued[base] = {}
                order.append(base)
                simple.append((base, ""))  # placeholder keeps the order
            continued[base].setdefault(int(m.group(2)), (bool(m.group(3)), value))
            continue
        simple.append((key, value))
    if not continued:
        return head, simple
    result: list[tuple[str, str]] = []
    for key, value in simple:
        if key in continued and value == "":
            segs = continued.pop(key)
            extended = any(ext for ext, _ in segs.values())
            joined = []
            for i in sorted(segs):
                ext, seg = segs[i]
                if extended and not ext:
                    seg = _pct(seg)
                    if i == 0:
                        seg = "''" + seg
                joined.append(seg)
            result.append((key + "*" if extended else key, "".join(joined)))
        else:
            result.append((key, value))
    return head, result


def _pct(text: str) -> str:
    safe = b"-._~"
    return "".join(
        chr(b) if chr(b).isalnum() and b < 128 or b in safe else f"%{b:02X}"
        for b in text.encode("utf-8", "surrogateescape")
    )


def param(params: list[tuple[str, str]], name: str) -> str | None:
    """The decoded value of parameter `name` (RFC 2231 `name*` decoded to text), or None."""
    for key, value in params:
        if key == name:
            return value
    for key, value in params:
        if key == name + "*":
            return decode_rfc2231(value)
    return None


def decode_rfc2231(value: str) -> str:
    """`charset'lang'%XX..` to text; bad charsets fall back to UTF-8 with replacement."""
    charset, sep, rest = value.partition("'")
    if not sep:
        charset, rest = "us-ascii", value
    else:
        _, _, rest = rest.partition("'")
    data = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), rest.encode("utf-8", "surrogateescape"))
    return _decode_bytes(data, charset or "us-ascii")


# ---- RFC 2047 encoded words --------------------------------------------------------------------

_EW = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")


def _codec(charset: str) -> str | None:
    charset = charset.split("*", 1)[0].strip().lower()  # RFC 2231 §5: charset*lang
    if charset in ("us-ascii", "ascii", ""):
        return "utf-8"  # lenient: 8-bit in "us-ascii" is almost always UTF-8
    try:
        return codecs.lookup(charset).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name (a peer's bytes)
        return None


def _decode_bytes(data: bytes, charset: str) -> str:
    name = _codec(charset)
    if name is not None:
        try:
            return data.decode(name)
        except (ValueError, LookupError):
            # ValueError, not only UnicodeDecodeError: the idna, punycode and undefined codecs raise a
            # plain UnicodeError, and =?idna?B?eG4tLQ==?= in a Subject made summarize raise (451 for ever)
            pass
    return text_of(data)


def text_of(data: bytes) -> str:
    """Unlabelled header bytes as text: UTF-8 if valid, else Windows-1252 / Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Decoded header text as every store and UTF-8 encoder takes it: NUL dropped (PostgreSQL text and
    jsonb refuse it, and an encoded word or a %00 in an RFC 2231 value decodes to one) and lone
    surrogates (a UTF-7 or UTF-16 encoded word can decode to one; UTF-8 cannot carry them) as U+FFFD.
    Either made the message's store fail: 451 at every SMTP retry, NO [SERVERBUG] to APPEND."""
    if text.isascii():
        return text.replace("\x00", "") if "\x00" in text else text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def text_of_escaped(text: str) -> str:
    """Text decoded with surrogateescape (MIME parameters are, so a boundary keeps its exact bytes) as
    text that can be stored and sent: undecodable bytes read as `text_of` reads header bytes. A raw
    Latin-1 filename would otherwise reach PostgreSQL as a lone surrogate, which it refuses."""
    return text if text.isascii() else text_of(text.encode("utf-8", "surrogateescape"))


def _ew_payload(enc: str, text: str) -> bytes:
    if enc in "Bb":
        text = text.rstrip("=")
        text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text)
        except (binascii.Error, ValueError):
            return b""
    data = text.replace("_", " ").encode("latin-1", "replace")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def decode_words(value: bytes | str) -> str:
    """Decode RFC 2047 encoded words for display; whitespace between adjacent words is dropped.

    Adjacent words in one charset are joined as bytes first, since senders split multi-byte
    characters across words.
    """
    text = text_of(value) if isinstance(value, bytes) else value
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[bytes] = []
    pending_cs = ""
    pos = 0
    for m in _EW.finditer(text):
        gap = text[pos : m.start()]
        if pending and gap.strip(" \t\r\n") == "":
            gap = ""
        if gap:
            if pending:
                out.append(_decode_bytes(b"".join(pending), pending_cs))
                pending = []
            out.append(gap)
        charset = m.group(1)
        if pending and charset.lower() != pending_cs.lower():
            out.append(_decode_bytes(b"".join(pending), pending_cs))
            pending = []
        pending_cs = charset
        pending.append(_ew_payload(m.group(2), m.group(3)))
        pos = m.end()
    if pending:
        out.append(_decode_bytes(b"".join(pending), pending_cs))
    out.append(text[pos:])
    return "".join(out)
