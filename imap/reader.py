"""Token reading over one complete IMAP command (literals inline), for the grammar.

Owns: the lexical rules of RFC 3501 §9 / RFC 9051 §9: atoms, quoted strings, literals `{n}`,
`{n+}` (RFC 7888) and `~{n}` (RFC 3516), numbers, astrings, list-mailbox, flags, dates.
Must not: know command semantics or do I/O. Errors raise `ParseError` with a client-safe text.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM = bytes(c for c in range(256) if c not in _ATOM_SPECIALS and c < 0x80)
_ASTRING = _ATOM + b"]"
_LIST_CHARS = _ATOM + b"%*]"
_LITERAL = re.compile(rb"(~?)\{(\d{1,12})(\+?)\}\r?\n")
_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATE_TIME = re.compile(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\Z")

MAX_NUMBER64 = 2**63 - 1
# Dovecot's mail_max_keyword_length is 50; Thunderbird's tags ($label1, or a tag's name) are far shorter
# than this, which leaves room for any client's naming.
MAX_KEYWORD = 200  # RFC 9051 §9 number64, the widest number any command takes

SYSTEM_FLAGS = {f.upper(): f for f in
                ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}


class ParseError(Exception):
    """The command does not match the grammar; the text is safe to send to the client."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


_ATOM_SET = frozenset(_ATOM)
_ASTRING_SET = frozenset(_ASTRING)
_LIST_SET = frozenset(_LIST_CHARS)


class Reader:
    """A cursor over one command's bytes (final CRLF removed)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- basics
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.data.startswith(token, self.pos):
            raise ParseError(f"expected {what or token.decode()!s}")
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.data.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def accept_word(self, word: bytes) -> bool:
        """Accept `word` case-insensitively when followed by SP, ")", "(" or the end."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() == word and (end == len(self.data) or self.data[end] in b" )("):
            self.pos = end
            return True
        return False

    def sp(self) -> None:
        if not self.accept(b" "):
            raise ParseError("expected a space" if not self.at_end() else "missing arguments")

    def end(self) -> None:
        """Only trailing blanks may remain (lenient: some clients add a space before CRLF)."""
        if self.data[self.pos :].strip(b" \t"):
            raise ParseError("unexpected characters at end of command")
        self.pos = len(self.data)

    # -- tokens
    def _chars(self, allowed: frozenset[int], what: str) -> bytes:
        end = self.pos
        data = self.data
        while end < len(data) and data[end] in allowed:
            end += 1
        if end == self.pos:
            raise ParseError(f"expected {what}")
        out = data[self.pos : end]
        self.pos = end
        return out

    def atom(self, what: str = "an atom") -> str:
        return self._chars(_ATOM_SET, what).decode("ascii")

    def number(self, what: str = "a number") -> int:
        start = self.pos
        end = start
        while end < len(self.data) and 0x30 <= self.data[end] <= 0x39:
            end += 1
        if end == start or end - start > 20:
            raise ParseError(f"expected {what}")
        value = int(self.data[start:end])
        if value > MAX_NUMBER64:  # the store's bigint could not hold it (LARGER, MODSEQ, partials)
            raise ParseError(f"{what} too large")
        self.pos = end
        return value

    def nz_number(self, what: str = "a number") -> int:
        value = self.number(what)
        if value == 0:
            raise ParseError(f"{what} must not be zero")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise ParseError("unterminated quoted string")
            c = data[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                nxt = data[self.pos + 1 : self.pos + 2]
                if nxt not in (b'"', b"\\"):
                    raise ParseError("invalid escape in quoted string")
                out += nxt
                self.pos += 2
                continue
            if c in (0x0D, 0x0A, 0x00):
                raise ParseError("invalid character in quoted string")
            out.append(c)
            self.pos += 1

    def literal(self, binary: bool = False) -> tuple[bytes, bool]:
        """A literal; returns (content, was_literal8). `binary` allows `~{n}` (RFC 3516)."""
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            raise ParseError("invalid literal")
        if m.group(1) and not binary:
            raise ParseError("literal8 not allowed here")
        n = int(m.group(2))
        start = m.end()
        if start + n > len(self.data):
            raise ParseError("truncated literal")
        self.pos = start + n
        content = self.data[start : start + n]
        if not m.group(1) and b"\x00" in content:
            raise ParseError("NUL in literal")  # RFC 3501 §4.3
        return content, bool(m.group(1))

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()[0]
        raise ParseError("expected a string")

    def astring(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string()
        return self._chars(_ASTRING_SET, what)

    def nstring(self) -> bytes | None:
        if self.accept_word(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string()
        return self._chars(_LIST_SET, "a mailbox pattern")

    def flag(self) -> str:
        """RFC 3501 §9 flag; system flags get their canonical case (they are case-insensitive). A keyword
        longer than MAX_KEYWORD is refused: every SELECT lists each keyword of the mailbox in FLAGS and
        PERMANENTFLAGS, so one of 60,000 characters was sent to every client at every SELECT."""
        if self.accept(b"\\"):
            if self.accept(b"*"):
                return "\\*"
            name = "\\" + self.atom("a flag")
            return SYSTEM_FLAGS.get(name.upper(), name)
        keyword = self.atom("a flag")
        if len(keyword) > MAX_KEYWORD:
            raise ParseError(f"keyword longer than {MAX_KEYWORD} characters")
        return keyword

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        while not self.accept(b")"):
            if flags:
                self.sp()
            flags.append(self.flag())
        return tuple(flags)

    def search_date(self) -> date:
        """RFC 3501 §9 date: date-text or quoted date-text."""
        quoted = self.accept(b'"')
        text = self._chars(_ATOM_SET, "a date").decode("ascii")
        if quoted:
            self.expect(b'"')
        m = _DATE.match(text)
        if m is None or m.group(2).upper() not in _MONTHS:
            raise ParseError("invalid date")
        try:
            return date(int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1)))
        except ValueError:
            raise ParseError("invalid date") from None

    def date_time(self) -> datetime:
        """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded)."""
        raw = self.quoted().decode("ascii", "replace")
        m = _DATE_TIME.match(raw)
        if m is None or m.group(2).upper() not in _MONTHS:
            raise ParseError("invalid date-time")
        day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
        offset = timedelta(hours=int(zh), minutes=int(zm))
        try:
            when = datetime(int(year), _MONTHS[m.group(2).upper()], int(day), int(hh), int(mm), int(ss),
                            tzinfo=timezone(-offset if sign == "-" else offset))
            when.astimezone(UTC)  # 01-Jan-0001 00:00:00 +0100 is in no UTC year the store can hold
        except (ValueError, OverflowError):
            raise ParseError("invalid date-time") from None
        return when

    def generic(self, depth: int = 0) -> object:
        """A tolerated value we do not interpret: atom, number, string or nested list."""
        if depth > 8:
            raise ParseError("nesting too deep")
        if self.accept(b"("):
            items: list[object] = []
            while not self.accept(b")"):
                if items:
                    self.sp()
                items.append(self.generic(depth + 1))
            return tuple(items)
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string().decode("utf-8", "replace")
        return self._chars(_LIST_SET | {0x5C}, "a value").decode("ascii")
