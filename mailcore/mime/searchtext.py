"""The searchable text of a message: what SEARCH BODY compares, decoded once for the full-text index.

Owns: which parts of a message count as its text (every text/* leaf part, and the header block of an
encapsulated message/rfc822), undoing their Content-Transfer-Encoding (RFC 2045 §6.7 quoted-printable,
§6.8 base64) and charset, and case folding, so that "the folded needle is a substring of the folded
text" is SEARCH's case-insensitive substring test (RFC 3501 §6.4.4, RFC 9051 §6.4.4) for any script.
Attachments that are not text (images, PDFs, archives) contribute nothing: their bytes are not words.
Also owns the words of a folded text (maximal runs of Unicode word characters) and their codes, and what
a needle's words tell about the words of any text containing it (`needle_terms`): the full-text index
narrows a SEARCH to the messages having such words, then compares the texts themselves.
It works from the part offsets precomputed at delivery (`precompute.PartInfo`, or the stored JSON of
them), so nothing is parsed twice.
Must not: raise on any input (a malformed encoding decodes as far as it can), or do I/O.
"""

from __future__ import annotations

import binascii
import itertools
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailcore.mime.headers import parse_header, text_of
from mailcore.mime.structure import content_type

# Charsets that are, in practice, "whatever the client had": tried as UTF-8, then Windows-1252 (the
# usual truth of unlabelled 8-bit mail), never with a replacement character for every 8-bit byte.
_GUESSED = frozenset({"", "us-ascii", "ascii", "utf-8", "utf8", "unknown-8bit", "x-unknown"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
WORD = re.compile(r"\w+")
# Longer "words" (an inline base64 blob, a long hex string) are not indexed; a text having one is then
# not narrowed by words at all (its `words` is None), so a needle inside such a run is still found.
MAX_WORD = 64
# Words shorter than this are not indexed: no term that narrows a search is (`storage.mailsearch` looks up
# parts of words of 3 characters or more, whole words of 4 or more), and the one- and two-letter words
# ("a", "of", "to", "in") are in nearly every text: about one entry in seven of the word index, for nothing.
MIN_WORD = 3
# Every ASCII byte that is not a word character (`\w`: letters, digits, underscore) as a space.
_ASCII_SEPARATORS = bytes(c if c < 128 and (chr(c).isalnum() or c == 0x5F) else 0x20 for c in range(256))
_ASCII_WORD_CHARS = [bytes([c]) for c in range(128) if _ASCII_SEPARATORS[c] != 0x20]
# Every ASCII word shorter than MIN_WORD (4,032 of them), to take from a text's words in one set difference.
_SHORT_ASCII = frozenset(b"".join(w) for n in range(1, MIN_WORD) for w in itertools.product(_ASCII_WORD_CHARS, repeat=n))


@dataclass(frozen=True, slots=True)
class SearchText:
    """`text` is folded (see `fold`); `complete` is False when the text was cut at the size limit (or the
    message could not be read), so a search must look at the raw message as well."""

    text: str
    complete: bool
    words: frozenset[bytes] | None = frozenset()  # `index_words` of the text


def fold(text: str) -> str:
    """The form both the index and a needle are compared in: Unicode case folding (so "STRASSE" finds
    "straße"), without NUL (PostgreSQL text cannot hold it) and without lone surrogates (which a broken
    UTF-7 part can produce and UTF-8 cannot carry). Folding is per character, so a substring of the text
    folds to a substring of the folded text."""
    folded = text.casefold().replace("\0", "")
    if folded.isascii():
        return folded
    return folded.encode("utf-8", "replace").decode("utf-8")


def index_words(text: str) -> frozenset[bytes] | None:
    """The words of a folded text that the index holds, as UTF-8: its distinct words of at least
    MIN_WORD characters, or None when one is longer than MAX_WORD. Bytes, because most mail is ASCII,
    split by a byte table twice as fast as the regex: no word is decoded, and the codes are computed from
    the bytes anyway. Every step past the split is a C loop (set difference, `max`), not Python's."""
    if text.isascii():
        found = frozenset(text.encode().translate(_ASCII_SEPARATORS).split())
        if found and max(map(len, found)) > MAX_WORD:
            return None
        return found - _SHORT_ASCII
    words = frozenset(WORD.findall(text))
    if words and max(map(len, words)) > MAX_WORD:
        return None
    return frozenset(w.encode() for w in words if len(w) >= MIN_WORD)


def word_code(word: str) -> int:
    """A word's code in the index: CRC-32 as a signed 32-bit integer (PostgreSQL's integer). Two words
    may share a code: that only adds candidates, which the comparison of texts then drops."""
    return code_of_utf8(word.encode("utf-8", "surrogatepass"))


def code_of_utf8(word: bytes) -> int:
    """`word_code` of a word given as UTF-8 (as `index_words` gives them)."""
    c = zlib.crc32(word)
    return c - (1 << 32) if c >= 1 << 31 else c


# Codes as text, by word: most words of a mail recur in the next, and computing a code costs more than
# looking it up. A pure function's memo (bounded; emptied when full), so sharing it is harmless.
_CODE_TEXT: dict[bytes, str] = {}
_CODE_TEXT_MAX = 500_000


def codes_literal(words: frozenset[bytes]) -> str:
    """The words' codes (`index_words`' UTF-8) as a PostgreSQL integer[] literal ("{1,-2}"): one text per
    message lets a whole batch of arrays of different lengths travel as one text[] parameter."""
    memo = _CODE_TEXT
    if len(memo) > _CODE_TEXT_MAX:
        memo.clear()
    for w in words.difference(memo):  # a C loop over the words, looking each up in the dict
        memo[w] = str(code_of_utf8(w))
    return "{" + ",".join(map(memo.__getitem__, words)) + "}"


@dataclass(frozen=True, slots=True)
class Term:
    """What one word of a needle says about a word of any text containing the needle. `kind` is
    "word" (that exact word: the needle has separators on both sides of it), "prefix" (a word starting
    with `token`), "suffix" (ending with it) or "within" (containing it)."""

    kind: str
    token: str


def needle_terms(folded: str) -> list[Term]:
    """The terms of a folded needle. Words are maximal runs of word characters in the text, so a needle
    word with a separator after it ends a text word, one with a separator before it starts one."""
    found = list(WORD.finditer(folded))
    out = []
    for m in found:
        before = m.start() > 0
        after = m.end() < len(folded)
        kind = {(True, True): "word", (True, False): "prefix", (False, True): "suffix"}.get((before, after), "within")
        out.append(Term(kind, m.group()))
    return out


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """A part's bytes with its Content-Transfer-Encoding undone; 7bit, 8bit, binary and unknown
    encodings are taken as they are."""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding == "base64":
        clean = _NOT_BASE64.sub(b"", data.split(b"=", 1)[0])
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        try:
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
        except binascii.Error:
            return b""
    return data


def decode_charset(data: bytes, charset: str | None) -> str:
    """Text from a part's bytes in its declared charset; unknown or absent charsets are guessed."""
    name = (charset or "").strip().strip('"').lower()
    if name not in _GUESSED:
        try:
            return data.decode(name, "replace")
        except (LookupError, ValueError, TypeError):
            pass  # not a charset Python knows (or not a text codec): guess as for an unlabelled part
    return text_of(data)


def _field(part: Any, name: str) -> Any:
    if isinstance(part, dict):  # the stored JSON (the indexer's case): a C check, not the ABC's
        return part.get(name)
    return part.get(name) if isinstance(part, Mapping) else getattr(part, name, None)


def root_type(header: bytes) -> str:
    """The message's own Content-Type ("type/subtype", lower case) from its header block."""
    main, sub, _ = content_type(parse_header(header, 0, len(header)), "text/plain")
    return f"{main}/{sub}"


def text_ranges(parts: Iterable[Any], body_offset: int, size: int,
                root: str | None = None) -> list[tuple[int, int, str, str | None]]:
    """(start, end, transfer encoding, charset) of every stretch of the raw message that holds text, in
    order: text/* leaf parts and encapsulated messages' headers. A message with no part list (stored
    before parts were kept) is taken as one text/plain body, RFC 2045 §5.2's default.
    In a multipart/alternative (the parents' types are known: `root` is the message's own type), a
    text/html part after a text/plain one is left out: the same words again (RFC 2046 §5.1.4), in nearly
    all mail today, and reading them once halves the work of indexing such a message. Without `root`
    (the indexer's first look, before it has read the header) the top level's html parts are kept."""
    parts = list(parts)
    types = {"": root or ""}
    types.update((str(_field(p, "number") or ""), str(_field(p, "content_type") or "")) for p in parts)
    out: list[tuple[int, int, str, str | None]] = []
    found_any = False
    plain_under: set[str] = set()  # multipart/alternative parents that have had a text/plain child
    for part in parts:
        found_any = True
        ctype = str(_field(part, "content_type") or "")
        parent = str(_field(part, "number") or "").rpartition(".")[0]
        if types.get(parent) == "multipart/alternative":
            if ctype == "text/plain":
                plain_under.add(parent)
            elif ctype == "text/html" and parent in plain_under:
                continue
        start, end = _field(part, "body_start"), _field(part, "body_end")
        if not isinstance(start, int) or not isinstance(end, int):
            continue
        inner = _field(part, "message_body_start")
        if isinstance(inner, int):
            out.append((start, min(inner, end), "7bit", None))
        elif ctype.startswith("text/"):
            charset = _field(part, "charset")
            out.append((start, end, str(_field(part, "encoding") or "7bit").lower(),
                        charset if isinstance(charset, str) else None))
    if not found_any:
        out.append((body_offset, size, "7bit", None))
    clamped = [(max(0, s), min(e, size), enc, cs) for s, e, enc, cs in out]
    return [r for r in clamped if r[1] > r[0]]


def search_text(ranges: Iterable[tuple[int, int, str, str | None]], window: bytes, window_start: int,
                limit: int) -> SearchText:
    """The folded text of the stretches `ranges` (from `text_ranges`) for SEARCH BODY, at most `limit`
    characters (then not complete). `window` is the raw message from offset `window_start` on, possibly
    cut short (the indexer reads only what the limit can use): a stretch it cuts is decoded as far as it
    goes and the result is marked not complete."""
    pieces: list[str] = []
    total = 0
    complete = True
    for start, end, enc, charset in ranges:
        if end - window_start > len(window):
            complete = False
        data = window[max(0, start - window_start): max(0, end - window_start)]
        text = fold(decode_charset(decode_transfer(data, enc), charset))
        if total + len(text) > limit:
            pieces.append(text[: max(0, limit - total)])
            complete = False
            break
        pieces.append(text)
        total += len(text) + 1
    joined = "\n".join(pieces)
    return SearchText(joined, complete, index_words(joined))


def message_text(raw: bytes, parts: Iterable[Any], body_offset: int, limit: int) -> SearchText:
    """`search_text` of a whole message."""
    return search_text(text_ranges(parts, body_offset, len(raw), root_type(raw[:body_offset])), raw, 0, limit)
