"""Opaque cursors for keyset pagination: `?limit=N&cursor=...` in, `next_cursor` and a Link header out.

A cursor encodes the last key of the page (a UID or a message id) and what it belongs to, so a cursor
from one listing is refused by another (422) instead of silently skipping mail.
"""

from __future__ import annotations

import base64
import binascii

from mailserver.api.problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The largest key a listing has: UIDs and message ids are PostgreSQL bigints. A larger one in a cursor or
# a path would fail in the query (a 500), so it is refused before.
MAX_KEY = 2**63 - 1


def encode(scope: str, key: int) -> str:
    """The cursor that continues after `key` in the listing `scope`."""
    return base64.urlsafe_b64encode(f"{scope}:{key}".encode()).decode().rstrip("=")


def decode(scope: str, cursor: str | None) -> int | None:
    """The key a cursor continues after; 422 if it is malformed or from another listing."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        got_scope, _, key = text.rpartition(":")
        # isascii: str.isdigit also accepts other scripts' digits, which int() reads.
        if got_scope != scope or not (key.isascii() and key.isdigit()) or int(key) > MAX_KEY:
            raise ValueError
        return int(key)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(422, "invalid cursor for this listing", kind="invalid-cursor") from None
