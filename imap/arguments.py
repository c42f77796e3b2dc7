"""FETCH and SEARCH argument grammar (RFC 3501 §6.4.4, §6.4.5; RFC 3516, RFC 4731, RFC 7162).

Owns: turning the argument text of FETCH into `FetchAtt`s (macros expanded) and of SEARCH into a
key tree. Must not: evaluate anything or do I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from imap import sequence
from imap.commands import And, FetchAtt, Key, Not, Or, SearchKey, Section
from imap.reader import ParseError, Reader

# RFC 3501 §6.4.5 macros
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_PLAIN_ATTS = frozenset({
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
    "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE",
})
_SECTION_WORDS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def _section(r: Reader, binary: bool) -> Section:
    r.expect(b"[")
    parts: list[int] = []
    text: str | None = None
    fields: list[str] = []
    dot = False
    while r.peek().isdigit():
        parts.append(r.nz_number("a part number"))
        dot = r.accept(b".")
        if not dot:
            break
    if dot or not parts:
        for word in _SECTION_WORDS:
            if r.peek(len(word)).upper() == word.encode():
                text = word
                r.pos += len(word)
                break
        if dot and text is None:
            raise ParseError("invalid section")
    if r.peek() not in (b"]", b" "):
        raise ParseError("invalid section")
    if text is not None and (binary or (text == "MIME" and not parts)):
        raise ParseError("invalid section")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.expect(b"(")
        while True:
            fields.append(r.astring("a header field name").decode("ascii", "replace"))
            if r.accept(b")"):
                break
            r.sp()
    r.expect(b"]")
    return Section(tuple(parts), text, tuple(fields))


def _fetch_att(r: Reader) -> FetchAtt:
    start = r.pos
    name = r._chars(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.0123456789-"), "a fetch item")
    upper = name.decode("ascii").upper()
    if r.peek() != b"[":
        if upper in _PLAIN_ATTS:
            return FetchAtt(upper)
        r.pos = start
        raise ParseError(f"unknown fetch item {upper[:30]}")
    peek = upper.endswith(".PEEK")
    base = upper[:-5] if peek else upper
    if base not in ("BODY", "BINARY", "BINARY.SIZE") or (peek and base == "BINARY.SIZE"):
        raise ParseError(f"unknown fetch item {upper[:30]}")
    section = _section(r, binary=base != "BODY")
    partial = None
    if r.accept(b"<"):
        if base == "BINARY.SIZE":
            raise ParseError("no partial with BINARY.SIZE")
        origin = r.number("a partial origin")
        r.expect(b".")
        length = r.nz_number("a partial length")
        r.expect(b">")
        partial = (origin, length)
    return FetchAtt(base, section, partial, peek)


def fetch_atts(r: Reader) -> tuple[FetchAtt, ...]:
    """RFC 3501 §9 fetch: a macro, one item, or a parenthesised list."""
    for macro, names in _MACROS.items():
        if r.accept_word(macro.encode()):
            return tuple(FetchAtt(n) for n in names)
    if r.accept(b"("):
        atts = [_fetch_att(r)]
        while not r.accept(b")"):
            r.sp()
            atts.append(_fetch_att(r))
        return tuple(atts)
    return (_fetch_att(r),)


def sequence_set(r: Reader) -> sequence.SequenceSet:
    text = r._chars(frozenset(b"0123456789:,*$"), "a sequence set")
    try:
        return sequence.parse(text)
    except ValueError as e:
        raise ParseError(str(e)) from None


# ---- SEARCH ------------------------------------------------------------------------------------

_NO_ARG = frozenset({
    "ALL", "ANSWERED", "DELETED", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
    "UNDELETED", "UNFLAGGED", "UNSEEN", "DRAFT", "UNDRAFT",
})
_STRING_ARG = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_ARG = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_NUMBER_ARG = frozenset({"LARGER", "SMALLER", "OLDER", "YOUNGER"})  # RFC 5032 OLDER/YOUNGER
MAX_SEARCH_DEPTH = 40

Decoder = Callable[[bytes], str]


def _key(r: Reader, decode: Decoder, depth: int) -> SearchKey:
    if depth > MAX_SEARCH_DEPTH:
        raise ParseError("search program nested too deeply")
    if r.accept(b"("):
        keys = [_key(r, decode, depth + 1)]
        while not r.accept(b")"):
            r.sp()
            keys.append(_key(r, decode, depth + 1))
        return And(tuple(keys))
    c = r.peek()
    if c and (c.isdigit() or c in b"*$"):
        return Key("SEQSET", sequence_set(r))
    word = r.atom("a search key").upper()
    if word in _NO_ARG:
        return Key(word)
    r.sp()
    if word in _STRING_ARG:
        return Key(word, decode(r.astring()))
    if word in _DATE_ARG:
        return Key(word, r.search_date())
    if word in _NUMBER_ARG:
        return Key(word, r.number())
    if word in ("KEYWORD", "UNKEYWORD"):
        return Key(word, r.flag())
    if word == "HEADER":
        name = r.astring("a header field name").decode("ascii", "replace")
        r.sp()
        return Key(word, (name, decode(r.astring())))
    if word == "UID":
        return Key(word, sequence_set(r))
    if word == "NOT":
        return Not(_key(r, decode, depth + 1))
    if word == "OR":
        left = _key(r, decode, depth + 1)
        r.sp()
        return Or(left, _key(r, decode, depth + 1))
    if word == "MODSEQ":  # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type] mod-sequence-valzer
        if r.peek() == b'"':
            r.quoted()
            r.sp()
            r.atom()
            r.sp()
        return Key(word, r.number())
    raise ParseError(f"unknown search key {word[:30]}")


def search_program(r: Reader, decode: Decoder) -> And:
    """1*(SP search-key) already past the first SP; all keys ANDed."""
    keys = [_key(r, decode, 0)]
    while r.accept(b" "):
        if r.at_end():
            break
        keys.append(_key(r, decode, 0))
    return And(tuple(keys))
