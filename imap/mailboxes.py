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


def matcher(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: `*` matches anything, `%` anything but the delimiter."""
    full = normalize_pattern(reference + pattern if not pattern.startswith(DELIMITER) or not reference
                             else reference.rstrip(DELIMITER) + pattern)
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


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
