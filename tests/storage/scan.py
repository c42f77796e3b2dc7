"""The reference answer for SEARCH tests: the criteria compiled with no index at all, so every entry's
message is read and tested. Indexed answers must equal it."""

from __future__ import annotations

import asyncpg

from storage import mailsearch


async def uids(pool: asyncpg.Pool, mailbox_id: int, criteria: mailsearch.Criteria,
               indexes: frozenset[str] = frozenset()) -> list[int]:
    """UIDs of `mailbox_id` matching `criteria` through only the indexes named (none: a plain scan)."""
    sql, args = mailsearch.search_sql(criteria, indexes)
    return [r["uid"] for r in await pool.fetch(sql, mailbox_id, *args)]
