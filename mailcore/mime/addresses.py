"""RFC 5322 address lists, parsed leniently into IMAP address structures.

Owns: turning an unfolded From/To/Cc/... value into `Address` items, with RFC 5322 §3.4 groups as
the start/end markers IMAP uses (RFC 3501 §7.4.2). Display names keep their encoded words (IMAP
clients decode them); `display_name()` decodes for search and display.
Must not: raise on any input.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailcore.mime.headers import decode_words

MISSING_MAILBOX = "MISSING_MAILBOX"  # as Dovecot: NIL would read as a group marker
MISSING_DOMAIN = "MISSING_DOMAIN"

_SPECIALS = set('<>@,;:."[]()\\')


@dataclass(frozen=True, slots=True)
class Address:
    """One IMAP address: (name adl mailbox host). host None with mailbox set starts a group;
    all four None ends it (RFC 3501 §7.4.2)."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_marker(self) -> bool:
        return self.host is None

    @property
    def addr_spec(self) -> str:
        return f"{self.mailbox}@{self.host}"

    def display_name(self) -> str | None:
        return decode_words(self.name) if self.name else None


# token kinds: "atom", "qs" (quoted string, unescaped), "comment", or a special character
_Token = tuple[str, str, bool]  # (kind, text, whitespace before)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    ws = False
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            ws = True
            i += 1
            continue
        if ch == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                if text[j] not in "\r\n":
                    buf.append(text[j])
                j += 1
            tokens.append(("qs", "".join(buf), ws))
            i = j + 1
        elif ch == "(":
            depth, j = 1, i + 1
            buf = []
            while j < n and depth:
                c = text[j]
                if c == "\\" and j + 1 < n:
                    j += 1
                    c = text[j]
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if not depth:
                        break
                buf.append(c)
                j += 1
            tokens.append(("comment", "".join(buf).strip(), ws))
            i = j + 1
        elif ch == "[":
            j = text.find("]", i)
            j = n - 1 if j < 0 else j
            tokens.append(("atom", text[i : j + 1], ws))
            i = j + 1
        elif ch in _SPECIALS:
            tokens.append((ch, ch, ws))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIALS and text[j] not in " \t\r\n":
                j += 1
            tokens.append(("atom", text[i:j], ws))
            i = j
        ws = False
    return tokens


def _phrase(tokens: list[_Token]) -> str:
    out: list[str] = []
    for kind, text, ws in tokens:
        if kind == "comment":
            continue
        if out and ws:
            out.append(" ")
        out.append(text)
    return "".join(out).strip()


def _local(tokens: list[_Token]) -> str:
    parts: list[str] = []
    for kind, text, _ in tokens:
        if kind == "comment":
            continue
        if kind == "qs":
            needs = any(c in _SPECIALS or c in " \t" for c in text) or not text
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' if needs else text)
        else:
            parts.append(text)
    return "".join(parts)


def _mailbox(item: list[_Token]) -> Address | None:
    kinds = [k for k, _, _ in item]
    comments = [t for k, t, _ in item if k == "comment" and t]
    if "<" in kinds:
        lt = kinds.index("<")
        name = _phrase(item[:lt]) or None
        gt = kinds.index(">", lt) if ">" in kinds[lt:] else len(item)
        spec = item[lt + 1 : gt]
        if not name and not spec and not comments:
            return None
    else:
        name = None
        spec = item
    adl = None
    skinds = [k for k, _, _ in spec]
    if ":" in skinds and skinds[:1] == ["@"]:  # obs-route: <@a,@b:user@host>
        colon = skinds.index(":")
        adl = "".join(t for k, t, _ in spec[:colon] if k != "comment") or None
        spec = spec[colon + 1 :]
        skinds = skinds[colon + 1 :]
    if "@" in skinds:
        at = len(skinds) - 1 - skinds[::-1].index("@")
        mailbox = _local(spec[:at]) or MISSING_MAILBOX
        host = "".join(t for k, t, _ in spec[at + 1 :] if k != "comment") or MISSING_DOMAIN
    else:
        local = _local(spec)
        if not local:
            if not name:
                return None
            mailbox = MISSING_MAILBOX
        else:
            mailbox = local
        host = MISSING_DOMAIN
    if name is None and comments:
        name = comments[-1]  # "user@host (Real Name)"
    return Address(name, adl, mailbox, host)


class _Item:
    """The tokens of the address being read, with what the loop asks of them kept as they are added:
    whether a "<" is among them, and whether the tokens after the last "<" are an RFC 5322 §4.4
    obs-route not yet ended by its ':' ("<@a,@b:"). Asking the token list itself each time made a
    field of many "<@a," or "<:" quadratic: 100 KB of To took a minute at delivery."""

    __slots__ = ("tokens", "has_angle", "after_angle", "in_route")

    def __init__(self) -> None:
        self.tokens: list[_Token] = []
        self.clear()

    def clear(self) -> None:
        self.tokens = []
        self.has_angle = False
        self.after_angle = -1  # tokens added since the last "<" (-1: none yet)
        self.in_route = False

    def append(self, tok: _Token) -> None:
        kind = tok[0]
        if kind == "<":
            self.has_angle = True
            self.after_angle = 0
            self.in_route = False
        elif self.after_angle == 0:
            self.after_angle = 1
            self.in_route = kind == "@"
        elif kind == ":":
            self.in_route = False
        self.tokens.append(tok)


def parse_addresses(value: str) -> list[Address]:
    """Parse an unfolded address-list value; junk is skipped, never raised on. Linear in the
    value's length, whatever its tokens."""
    tokens = _tokenize(value)
    out: list[Address] = []
    item = _Item()
    in_group = False
    angle = False

    def flush() -> None:
        if item.tokens:
            addr = _mailbox(item.tokens)
            if addr is not None:
                out.append(addr)
            item.clear()

    for tok in tokens:
        kind = tok[0]
        if angle:
            if kind == ">":
                angle = False
            elif kind in (",", ";", ":") and not item.in_route:
                angle = False  # unclosed "<": end the address here
            if angle or kind == ">":
                item.append(tok)
                continue
        elif kind == "<":
            angle = True
            item.append(tok)
            continue
        if kind == ",":
            flush()
        elif kind == ";":
            flush()
            if in_group:
                out.append(Address(None, None, None, None))
                in_group = False
        elif kind == ":" and not in_group and not item.has_angle:
            name = _phrase(item.tokens)
            item.clear()
            out.append(Address(None, None, name, None))
            in_group = True
        else:
            item.append(tok)
    flush()
    if in_group:
        out.append(Address(None, None, None, None))
    return out
