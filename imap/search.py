"""SEARCH: the parser's key tree, with sequence numbers and \\Recent resolved, as store criteria.

Owns the meaning of every RFC 3501 §6.4.4 search key (plus RFC 5032 OLDER/YOUNGER and RFC 7162
MODSEQ) in terms of `storage.mailsearch` criteria, which the store runs as one parameterised SQL
query. Sequence-number sets and \\Recent are session state, so they become UID ranges here.
Must not: build SQL or do I/O.
"""

from __future__ import annotations

from imap.commands import And, Key, Not, Or, SearchKey
from imap.selected import SelectedMailbox
from storage import mailsearch as ms
from storage.mailstore import DELETED, SEEN

_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": DELETED, "FLAGGED": "\\Flagged", "SEEN": SEEN,
              "DRAFT": "\\Draft"}
_STRING_KEYS = {"BCC": "bcc", "BODY": "body", "CC": "cc", "FROM": "from", "SUBJECT": "subject",
                "TEXT": "text", "TO": "to"}
_DATE_KEYS = {"BEFORE": ("internal_day", "<"), "ON": ("internal_day", "="), "SINCE": ("internal_day", ">="),
              "SENTBEFORE": ("sent_day", "<"), "SENTON": ("sent_day", "="), "SENTSINCE": ("sent_day", ">=")}
_EVERYTHING = ms.AllOf(())


# Header keys become one case-insensitive PostgreSQL regex each (storage.mailsearch.header_regex), whose
# cost grows with the square of the needle: 30,000 characters took 2.4 s, 100,000 took 38 s and then
# failed ("regular expression is too complex"). BODY and TEXT need no regex, but each needle is split into
# trigrams for the index and matched against every candidate's text, and a search program may carry any
# number of them: the same bound holds for all the strings of a command together.
MAX_NEEDLES = 8192


# Every key becomes a condition of one SQL statement, and PostgreSQL's time grows faster than the count:
# 100 `1:*` keys took 1.3 s, 300 took 11 s, 1,000 more than two minutes of a database connection, from a
# command of 4 KB (measured on 2 cores). Clients send a handful; OR chains stop at 40 (the nesting limit).
MAX_KEYS = 100


def key_count(key: SearchKey) -> int:
    """Keys in a search program, AND, OR and NOT included."""
    match key:
        case And(keys):
            return sum(key_count(k) for k in keys)
        case Or(left, right):
            return 1 + key_count(left) + key_count(right)
        case Not(inner):
            return 1 + key_count(inner)
    return 1


def needles_length(key: SearchKey) -> int:
    """Characters of all the string needles (FROM, TO, CC, BCC, SUBJECT, HEADER, BODY, TEXT) of a
    search program."""
    match key:
        case And(keys):
            return sum(needles_length(k) for k in keys)
        case Or(left, right):
            return needles_length(left) + needles_length(right)
        case Not(inner):
            return needles_length(inner)
    assert isinstance(key, Key)
    if key.name == "HEADER":
        return len(key.value[0]) + len(key.value[1])  # type: ignore[index]
    if key.name in _STRING_KEYS:
        return len(str(key.value))
    return 0


def _ranges(uids: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for u in sorted(uids):
        if out and u == out[-1][1] + 1:
            out[-1] = (out[-1][0], u)
        else:
            out.append((u, u))
    return tuple(out)


def translate(key: SearchKey, sel: SelectedMailbox) -> ms.Criteria:
    """The criteria for one key (trees recursively). ValueError for a key we cannot run."""
    match key:
        case And(keys):
            return ms.AllOf(tuple(translate(k, sel) for k in keys))
        case Or(left, right):
            return ms.AnyOf((translate(left, sel), translate(right, sel)))
        case Not(inner):
            return ms.Negate(translate(inner, sel))
    assert isinstance(key, Key)
    name, value = key.name, key.value
    recent = ms.UidIn(_ranges(list(sel.recent)))
    if name == "ALL":
        return _EVERYTHING
    if name in _FLAG_KEYS:
        return ms.HasFlag(_FLAG_KEYS[name])
    if name.startswith("UN") and name[2:] in _FLAG_KEYS:
        return ms.Negate(ms.HasFlag(_FLAG_KEYS[name[2:]]))
    if name == "KEYWORD":
        return ms.HasFlag(str(value))
    if name == "UNKEYWORD":
        return ms.Negate(ms.HasFlag(str(value)))
    if name == "RECENT":
        return recent
    if name == "NEW":
        return ms.AllOf((recent, ms.Negate(ms.HasFlag(SEEN))))
    if name == "OLD":
        return ms.Negate(recent)
    if name in _STRING_KEYS:
        return ms.Contains(_STRING_KEYS[name], str(value))
    if name == "HEADER":
        field, text = value  # type: ignore[misc]
        return ms.Contains("header", text, field.lower())
    if name in _DATE_KEYS:
        what, op = _DATE_KEYS[name]
        return ms.Compare(what, op, value)  # type: ignore[arg-type]
    if name == "LARGER":
        return ms.Compare("size", ">", int(value))  # type: ignore[arg-type]
    if name == "SMALLER":
        return ms.Compare("size", "<", int(value))  # type: ignore[arg-type]
    if name == "OLDER":
        return ms.Compare("age_seconds", ">=", int(value))  # type: ignore[arg-type]
    if name == "YOUNGER":
        return ms.Compare("age_seconds", "<=", int(value))  # type: ignore[arg-type]
    if name == "MODSEQ":
        return ms.Compare("modseq", ">=", int(value))  # type: ignore[arg-type]
    if name == "UID":
        if value.saved:  # type: ignore[union-attr]
            raise ValueError("$ is not supported")
        return ms.UidIn(tuple(value.resolve(sel.max_uid)))  # type: ignore[union-attr]
    if name == "SEQSET":
        if value.saved:  # type: ignore[union-attr]
            raise ValueError("$ is not supported")
        return ms.UidIn(tuple(sel.seq_ranges_as_uids(value)))  # type: ignore[arg-type]
    raise ValueError(f"unsupported search key {name}")
