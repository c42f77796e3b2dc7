"""Mailbox names as IMAP sees them: validity, LIST patterns, and LIST attributes.

Owns the hierarchy rules (delimiter "/", INBOX case-insensitive, RFC 3501 §5.1), turning LIST
reference + pattern with `*` and `%` into a matcher (§6.3.8), and the attributes a LIST line carries
(RFC 3348 CHILDREN, RFC 6154 SPECIAL-USE, RFC 5258 \\Subscribed). Must not: do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from storage.mailstore import DELIMITER, INBOX, Mailbox

MAX_NAME = 512
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f*%]")


def normalize(name: str) -> str:
    """A name as stored: INBOX upper-cased (also as the first level), a trailing delimiter dropped."""
    if name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]  # RFC 3501 §6.3.3: "foo/" creates "foo"
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == INBOX:
        name = INBOX + sep + rest
    return name


def valid(name: str) -> bool:
    """Whether a client may create a mailbox with this (normalised) name."""
    if not name or len(name) > MAX_NAME or _FORBIDDEN.search(name):
        return False
    return all(part.strip() for part in name.split(DELIMITER))


class Matcher:
    """A LIST pattern (RFC 3501 §6.3.8: `*` matches anything, `%` anything but the delimiter), run as a
    bit-parallel automaton: bit j of the state says "the first j tokens matched so far", and each
    character of the name moves every state at once. Time is linear in the name, whatever the pattern: a
    regex (`.*` for `*`) backtracked without end on `%*%*%*...x`, blocking the event loop for minutes."""

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for ch in pattern:
            if ch in "*%" and tokens and tokens[-1] in "*%":
                tokens[-1] = "*" if "*" in (ch, tokens[-1]) else "%"  # a run of wildcards is one
            else:
                tokens.append(ch)
        self._literals: dict[str, int] = {}
        self._star = self._percent = 0
        for j, token in enumerate(tokens):
            if token == "*":
                self._star |= 1 << j
            elif token == "%":
                self._percent |= 1 << j
            else:
                self._literals[token] = self._literals.get(token, 0) | 1 << j
        self._wild = self._star | self._percent
        self._accept = 1 << len(tokens)
        # each literal takes one character: a pattern with more literals than any name matches none
        self._hopeless = len(tokens) - bin(self._wild).count("1") > MAX_NAME
        self._start = self._closure(1)

    def _closure(self, state: int) -> int:
        """Wildcards also match nothing (one step: no two wildcards are adjacent)."""
        return state | (state & self._wild) << 1

    def match(self, name: str) -> bool:
        if self._hopeless:
            return False
        state = self._start
        for ch in name:
            keep = self._star if ch == DELIMITER else self._wild
            state = self._closure((state & self._literals.get(ch, 0)) << 1 | state & keep)
            if not state:
                return False
        return bool(state & self._accept)


def matcher(reference: str, pattern: str) -> Matcher:
    """RFC 3501 §6.3.8: the reference and pattern as one matcher of mailbox names."""
    full = normalize_pattern(reference + pattern if not pattern.startswith(DELIMITER) or not reference
                             else reference.rstrip(DELIMITER) + pattern)
    return Matcher(full)


def normalize_pattern(pattern: str) -> str:
    if pattern[:5].upper() == INBOX and (len(pattern) == 5 or pattern[5] in (DELIMITER, "*", "%")):
        return INBOX + pattern[5:]
    return pattern


def attributes(box: Mailbox, parents: set[str], subscribed_attr: bool = False) -> list[str]:
    """`parents` is `child_index` of the account's mailboxes."""
    attrs = ["\\HasChildren" if box.name in parents else "\\HasNoChildren"]
    if box.special_use:
        attrs.append(box.special_use)
    if subscribed_attr and box.subscribed:
        attrs.append("\\Subscribed")
    return attrs


def child_index(boxes: Iterable[Mailbox]) -> set[str]:
    """Every name that has a child (for \\HasChildren without a quadratic scan)."""
    out: set[str] = set()
    for box in boxes:
        parts = box.name.split(DELIMITER)
        out.update(DELIMITER.join(parts[:i]) for i in range(1, len(parts)))
    return out
