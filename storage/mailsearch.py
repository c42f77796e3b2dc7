"""Search criteria over a mailbox's entries, compiled to a parameterised SQL condition, and run.

Owns: a small protocol-neutral criteria tree (the IMAP layer translates SEARCH keys into it, having
already turned sequence numbers into UIDs), its translation into SQL over `mailbox_messages mm`
joined with `messages m` (and, for body text, `message_texts t`), and `search`, which runs it. Every
value the client gave travels as a bind parameter; the SQL text is assembled only from the fixed
fragments below. Header substring matches are case-insensitive for ASCII and byte-exact otherwise:
header bytes are compared in PostgreSQL's `escape` encoding (NUL and 8-bit bytes as `\\ooo`), so any
message, even one with NUL bytes, can be searched without decoding.
Body text (BODY, and TEXT's body half) is matched in the message's decoded, case-folded text where the
indexer (storage.bodyindex, migration 0009) has stored it: a word in a quoted-printable or base64 text
part is found, base64 noise in an attachment is not, and case folds for every script, as users and
Dovecot expect. A message not indexed yet is matched in its raw body bytes as before, and one whose text
was cut at the size limit in both, so a search never misses what is in a text part because of the index.
Must not: know IMAP syntax or sequence numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from mailcore.mime.headerfields import SYNC_FIELDS
from mailcore.mime.searchtext import MIN_WORD, Term, fold, needle_terms, word_code


@dataclass(frozen=True)
class HasFlag:
    flag: str


@dataclass(frozen=True)
class UidIn:
    ranges: tuple[tuple[int, int], ...]  # inclusive (low, high)


@dataclass(frozen=True)
class Compare:
    """`what` is one of size, internal_day, sent_day, modseq, age_seconds; `op` one of < = >= >."""

    what: str
    op: str
    value: int | date


@dataclass(frozen=True)
class Contains:
    """`where` is subject, from, to, cc, bcc, body, text, or header (then `field` names it)."""

    where: str
    text: str
    field: str = ""


@dataclass(frozen=True)
class AllOf:
    items: tuple[Criteria, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Criteria, ...]


@dataclass(frozen=True)
class Negate:
    item: Criteria


Criteria = HasFlag | UidIn | Compare | Contains | AllOf | AnyOf | Negate

_COMPARE_SQL = {
    "size": "(m.size + length(mm.header_prefix))",
    "internal_day": "(mm.internal_date AT TIME ZONE 'UTC')::date",
    "sent_day": "(COALESCE(m.sent_date, mm.internal_date) AT TIME ZONE 'UTC')::date",
    "modseq": "mm.modseq",
    "age_seconds": "extract(epoch FROM now() - mm.internal_date)",
}
_OPS = frozenset({"<", "=", ">=", ">", "<="})
_HEADER_TEXT = "encode(mm.header_prefix || m.header, 'escape')"
# The fields of SYNC_FIELDS as stored at delivery: a small inline column, not the TOASTed header; a
# field's lines there are its lines in the header (mailcore.mime.headerfields), so the regex finds the same.
_SYNC_TEXT = "encode(COALESCE(m.sync_fields, mm.header_prefix || m.header), 'escape')"
_BODY_TEXT = "encode(substring(m.raw FROM m.body_offset + 1), 'escape')"
_ALL_TEXT = "encode(mm.header_prefix || m.raw, 'escape')"
_DECODED_COLUMN = {"subject": "m.subject", "from": "m.from_addr", "to": "m.to_addrs", "cc": "m.cc_addrs"}
# The keys the header trigram index (migration 0012; keyed by account since 0014) narrows: FROM/TO/CC/BCC/
# SUBJECT and HEADER of these names. Its two text columns hold, for messages with sync_fields, every text
# such a match compares: the decoded columns (`_DECODED_COLUMN`) and sync_fields without Message-ID,
# References and the other sync fields that are none of these five. HEADER of those is answered by the
# scan of sync_fields.
INDEXED_FIELDS = frozenset({"from", "to", "cc", "bcc", "subject"})
_DECODED_INDEXED = "mail_search_decoded(m.subject, m.from_addr, m.to_addrs, m.cc_addrs)"
_HEADS_INDEXED = "mail_search_heads(m.sync_fields)"
# The account of the searched mailbox ($1) as the index's first column holds it (migration 0014): an
# InitPlan, looked up once per statement.
_OWNER = "m.accounts @> ARRAY[(SELECT b.account_id FROM mailboxes b WHERE b.id = $1)]"


def _trigram_friendly(text: str) -> bool:
    """Whether a needle has 3 alphanumeric characters in a row: a trigram index narrows it down (with
    fewer, pg_trgm can extract no trigram from the pattern and would scan the whole index)."""
    return re.search(r"[^\W_]{3}", text) is not None


def _on_one_line(text: str) -> bool:
    """Whether a needle has no line break: then a match of the header regex lies within one line of the
    field, which mail_search_heads keeps as it was (a needle spanning lines may run into a field it drops)."""
    return "\n" not in text


def pg_escape(data: bytes) -> str:
    """What PostgreSQL's `encode(data, 'escape')` returns, so a needle matches escaped haystacks."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0 or b >= 0x80:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return "".join(out)


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards and escape character taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _regex_literal(text: str) -> str:
    # PostgreSQL ARE: a backslash before a non-alphanumeric character makes it literal.
    return "".join(c if c.isalnum() else "\\" + c for c in text)


def header_regex(field: str, needle: str) -> str:
    """A case-insensitive regex finding `needle` in the (possibly folded) field `field`."""
    value = _regex_literal(pg_escape(needle.encode("utf-8")))
    return f"(^|\n){_regex_literal(field)}[ \t]*:([^\n]|\n[ \t])*{value}"


_HEADER_ONLY = "encode(mm.header_prefix || m.header, 'escape')"
# The raw body of an entry not (fully) indexed, read by its own look-up: a BODY search then joins no
# `messages` row for the entries whose text answers (most of them).
_RAW_BODY_OF_ENTRY = ("EXISTS (SELECT 1 FROM messages rm WHERE rm.id = mm.message_id"
                      " AND encode(substring(rm.raw FROM rm.body_offset + 1), 'escape') ILIKE {})")
_USES_MESSAGE = re.compile(r"(?<![\w.])m\.")


# Up to this many code sets narrow one needle (message_texts_with takes three).
_NARROWING_SETS = 3
Narrowing = tuple[list[int], list[int], list[int]]


class _Compiler:
    def __init__(self, first_param: int, indexes: frozenset[str] = frozenset(),
                 narrowing: dict[str, Narrowing | None] | None = None) -> None:
        self.args: list[Any] = []
        self.first = first_param
        self.indexes = indexes
        self.texts = "texts" in indexes
        self.narrowing = narrowing or {}
        self.uses_texts = False  # the condition reads `message_texts t` (the query must join it)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${self.first + len(self.args) - 1}"

    def compile(self, c: Criteria) -> str:
        match c:
            case HasFlag(flag):
                return f"({self.param(flag)} = ANY(mm.flags))"
            case UidIn(ranges):
                if not ranges:
                    return "false"
                lo = self.param([r[0] for r in ranges])
                hi = self.param([r[1] for r in ranges])
                return (f"EXISTS (SELECT 1 FROM unnest({lo}::bigint[], {hi}::bigint[]) AS r(lo, hi)"
                        " WHERE mm.uid BETWEEN r.lo AND r.hi)")
            case Compare(what, op, value):
                if op not in _OPS or what not in _COMPARE_SQL:
                    raise ValueError(f"bad comparison {what} {op}")
                cast = "::date" if isinstance(value, date) else "::bigint"
                return f"({_COMPARE_SQL[what]} {op} {self.param(value)}{cast})"
            case Contains(where, text, field):
                return self._contains(where, text, field)
            case AllOf(items):
                return "(" + " AND ".join(self.compile(i) for i in items) + ")" if items else "true"
            case AnyOf(items):
                return "(" + " OR ".join(self.compile(i) for i in items) + ")" if items else "false"
            case Negate(item):
                return f"(NOT {self.compile(item)})"
        raise TypeError(f"not a criterion: {c!r}")

    def _body_text(self, text: str, raw_like: str) -> str:
        """BODY over the decoded text where the indexer stored it, else (or also, when cut) the raw body.
        With narrowing code sets for the needle, an indexed text is compared only if its message has a
        word from each set: membership in that set of messages, found through the word index once per
        query (a hashed sub-plan), is far cheaper than comparing every text."""
        self.uses_texts = True
        text_param = self.param(like_pattern(fold(text)))
        raw = _RAW_BODY_OF_ENTRY.format(self.param(raw_like))
        direct = f"(t.text LIKE {text_param})"
        indexed = direct
        sets = self.narrowing.get(fold(text))
        if sets is not None:
            a, b, c = (self.param(codes) for codes in sets)
            indexed = (f"((t.words IS NULL OR mm.message_id IN (SELECT message_texts_with({a}::integer[],"
                       f" {b}::integer[], {c}::integer[]))) AND {direct})")
        return (f"(CASE WHEN t.complete THEN {indexed} WHEN t.complete IS NULL THEN {raw}"
                f" ELSE ({direct} OR {raw}) END)")

    def _contains(self, where: str, text: str, field: str) -> str:
        escaped_like = like_pattern(pg_escape(text.encode("utf-8")))
        if self.texts and where == "body":
            return self._body_text(text, escaped_like)
        if self.texts and where == "text":
            return f"({self._body_text(text, escaped_like)} OR {_HEADER_ONLY} ILIKE {self.param(escaped_like)})"
        if where == "body":
            return f"({_BODY_TEXT} ILIKE {self.param(escaped_like)})"
        if where == "text":
            return f"({_ALL_TEXT} ILIKE {self.param(escaped_like)})"
        name = field if where == "header" else where
        if not name or any(ch in name for ch in ":\r\n\0 \t"):
            return "false"
        if name.lower() in SYNC_FIELDS:
            # ILIKE first: a cheap necessary condition (both compare the ASCII escaped form
            # case-insensitively), so the regex runs only where the needle occurs at all
            cond = (f"({_SYNC_TEXT} ILIKE {self.param(escaped_like)}"
                    f" AND {_SYNC_TEXT} ~* {self.param(header_regex(name, text))})")
        else:
            cond = f"({_HEADER_TEXT} ~* {self.param(header_regex(name, text))})"
        column = _DECODED_COLUMN.get(where)
        if column is not None:  # decoded values find encoded-word subjects and names too
            # the cheap comparison first: most matches are found there, without the regex
            cond = f"(COALESCE({column}, '') ILIKE {self.param(like_pattern(text))} OR {cond})"
        return cond


    def prefilter(self, c: Criteria) -> str | None:
        """A condition on `m` alone that every entry matching `c` satisfies, answerable from the trigram
        indexes; None when there is none (then nothing is narrowed down)."""
        match c:
            case Contains("body" | "text", _):
                return None  # the word index of the decoded texts narrows those (`narrowing`), not this
            case Contains(where, text, field):
                name = field if where == "header" else where
                if ("fields" not in self.indexes or name.lower() not in INDEXED_FIELDS
                        or not _trigram_friendly(text) or not _on_one_line(text)):
                    return None
                # each arm with the account, so that one GIN scan intersects its key with the trigrams;
                # rows without sync_fields (before 0006) or without the account list (written by the
                # previous version during a rolling upgrade) are always candidates
                decoded = ""
                if where in _DECODED_COLUMN:  # the arms of `_contains`: the decoded column, then the field
                    decoded = f" OR ({_OWNER} AND {_DECODED_INDEXED} ILIKE {self.param(like_pattern(text))})"
                escaped = like_pattern(pg_escape(text.encode("utf-8")))
                return (f"(m.sync_fields IS NULL OR m.accounts IS NULL{decoded}"
                        f" OR ({_OWNER} AND {_HEADS_INDEXED} ILIKE {self.param(escaped)}))")
            case AllOf(items):
                found = [p for p in (self.prefilter(i) for i in items) if p is not None]
                return "(" + " AND ".join(found) + ")" if found else None
            case AnyOf(items):
                mark = len(self.args)
                alts = [self.prefilter(i) for i in items]
                if not alts or any(p is None for p in alts):
                    del self.args[mark:]  # the parameters of the alternatives dropped
                    return None
                return "(" + " OR ".join(alts) + ")"  # type: ignore[arg-type]
        return None


def compile_criteria(criteria: Criteria, first_param: int = 2) -> tuple[str, list[Any]]:
    """(SQL condition, bind values) with placeholders numbered from `first_param`."""
    comp = _Compiler(first_param)
    sql = comp.compile(criteria)
    return sql, comp.args


# Per pool (by identity; a pool is not weak-referenceable): which indexes exist, checked once.
_INDEXES: dict[int, tuple[Any, frozenset[str]]] = {}
# (0008's optional body trigram index is not among them: since 0009 the decoded texts answer BODY.) All are
# GIN indexes, whose pending lists storage.bodyindex merges when mail stops.
INDEX_NAMES = {"fields": "messages_search_heads_by_account", "texts": "message_texts_words",
                "words_trgm": "search_words_trgm"}


async def available_indexes(pool: asyncpg.Pool | asyncpg.Connection) -> frozenset[str]:
    """The kinds of SEARCH that indexes can answer here: "fields" (migrations 0012, 0014), "texts" (the decoded
    texts and their word index, 0009) and "words_trgm" (the trigram index of
    the vocabulary, where pg_trgm is: without it, needles that are parts of words do not narrow)."""
    known = _INDEXES.get(id(pool))
    if known is None or known[0] is not pool:
        row = await pool.fetchrow("SELECT " + ", ".join(f"to_regclass('{rel}') IS NOT NULL AS {kind}"
                                                         for kind, rel in INDEX_NAMES.items()))
        known = _INDEXES[id(pool)] = (pool, frozenset(k for k in INDEX_NAMES if row[k]))
    return known[1]


SEARCH_TIMEOUT = 600.0  # seconds: a search over a large mailbox is slow, not unavailable


def _body_needles(c: Criteria) -> list[str]:
    match c:
        case Contains("body" | "text", text):
            return [fold(text)]
        case AllOf(items) | AnyOf(items):
            return [n for i in items for n in _body_needles(i)]
        case Negate(item):
            return _body_needles(item)
    return []


# A part-word term whose token matches more words of the vocabulary than this does not narrow.
_MOST_WORDS = 2000
# Whole words shorter than this do not narrow: "the", "and", "you" are in nearly every message of the
# database (the index is not per mailbox), so the set to hash would be the whole table; comparing this
# mailbox's texts costs less.
_SHORTEST_WORD = 4


def _term_pattern(term: Term) -> str:
    token = term.token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return {"prefix": token + "%", "suffix": "%" + token}.get(term.kind, "%" + token + "%")


async def narrowing(pool: asyncpg.Pool | asyncpg.Connection, criteria: Criteria,
                    indexes: frozenset[str]) -> dict[str, Narrowing | None]:
    """Per folded body needle of `criteria`, up to three word-code sets such that every text containing
    the needle has a word from each (`searchtext.needle_terms`), or None when its words narrow nothing.
    Whole words give their code; parts of words (3 characters or more, with the vocabulary's trigram
    index) the codes of the vocabulary's words having them, all looked up in one statement."""
    if "texts" not in indexes:
        return {}
    terms = {needle: needle_terms(needle) for needle in dict.fromkeys(_body_needles(criteria))}
    lookups = sorted({_term_pattern(t) for ts in terms.values() for t in ts
                      if t.kind != "word" and len(t.token) >= MIN_WORD and "words_trgm" in indexes})
    found: dict[str, list[int] | None] = {}
    if lookups:
        rows = await pool.fetch("SELECT p, search_word_codes(p, $2) AS codes FROM unnest($1::text[]) AS p",
                                lookups, _MOST_WORDS)
        found = {r["p"]: r["codes"] for r in rows}
    out: dict[str, Narrowing | None] = {}
    for needle, ts in terms.items():
        sets: list[tuple[int, list[int]]] = []
        for t in ts:
            if t.kind == "word" and len(t.token) < max(_SHORTEST_WORD, MIN_WORD):  # shorter: not indexed
                continue
            codes = [word_code(t.token)] if t.kind == "word" else found.get(_term_pattern(t))
            if codes is not None:
                sets.append((len(t.token), codes))
        sets.sort(key=lambda s: -s[0])  # longer words are rarer: the best narrowing first
        chosen = [codes for _, codes in sets[:_NARROWING_SETS]]
        out[needle] = None if not chosen else \
            (chosen[0], chosen[min(1, len(chosen) - 1)], chosen[min(2, len(chosen) - 1)])
    return out


def search_sql(criteria: Criteria, indexes: frozenset[str],
               narrowed: dict[str, Narrowing | None] | None = None) -> tuple[str, list[Any]]:
    """The statement `search` runs (parameter $1 the mailbox id): the entries' UIDs in order. With a
    necessary condition on `messages m` from the header-field index, the messages satisfying it are found
    first, then only their entries in this mailbox are tested (an array from a sub-select keeps that order
    whatever the statistics suggest)."""
    comp = _Compiler(2, indexes, narrowed)
    where = comp.compile(criteria)
    candidates = comp.prefilter(criteria)
    join = " JOIN messages m ON m.id = mm.message_id" if _USES_MESSAGE.search(where) else ""
    if comp.uses_texts:
        join += " LEFT JOIN message_texts t ON t.message_id = mm.message_id"
    narrow = "" if candidates is None else \
        f"mm.message_id = ANY(ARRAY(SELECT m.id FROM messages m WHERE {candidates})) AND "
    sql = (f"SELECT mm.uid FROM mailbox_messages mm{join}"
           f" WHERE {narrow}mm.mailbox_id = $1 AND ({where}) ORDER BY mm.uid")
    return sql, comp.args


async def search(pool: asyncpg.Pool | asyncpg.Connection, mailbox_id: int, criteria: Criteria) -> list[int]:
    """UIDs of the entries of `mailbox_id` matching `criteria`, ascending, through every index there is."""
    indexes = await available_indexes(pool)
    sql, args = search_sql(criteria, indexes, await narrowing(pool, criteria, indexes))
    rows = await pool.fetch(sql, mailbox_id, *args, timeout=SEARCH_TIMEOUT)
    return [r["uid"] for r in rows]
