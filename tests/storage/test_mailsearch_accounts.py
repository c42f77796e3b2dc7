"""The header SEARCH index keyed by account (migration 0014): every writer records the accounts whose
mailboxes hold a message, the migration's backfill records the same, and a search of one account's
mailbox fetches no other account's candidates however much of their mail matches."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from storage import accounts, mailsearch, mailstore
from storage.delivery import (
    Delivery,
    LocalBatchItem,
    LocalRecipient,
    RemoteRecipient,
    commit_local_batch,
    message_values,
    trace_prefix,
)
from storage.migrations import apply_migrations
from tests.pg import PgServer
from tests.storage import scan

REPO = Path(__file__).resolve().parents[2]
MIGRATION = (REPO / "storage/migrations/0014_search_heads_by_account.sql").read_text()


def message(n: int, subject: str) -> bytes:
    return (f"From: Sender {n} <s{n}@example.org>\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


async def deliver(pool: asyncpg.Pool, n: int, subject: str, *account_ids: int, remote: bool = False) -> int:
    d = Delivery(sender="b@example.org")
    for account in account_ids:
        d.add_local(LocalRecipient(account, f"{account}@example.test"))
    if remote:
        d.add_remote(RemoteRecipient("far@remote.example"))
    raw = message(n, subject)
    return (await d.commit(pool, raw, summarize(raw))).message_id


@pytest.fixture
async def users(pool: asyncpg.Pool) -> list[int]:
    await accounts.add_domain(pool, "example.test")
    return [await accounts.add_account(pool, f"{name}@example.test", "x") for name in ("a", "b", "c")]


async def inbox(pool: asyncpg.Pool, account: int) -> int:
    box = await mailstore.get_mailbox(pool, account, "INBOX")
    assert box is not None
    return box.id


async def owners(pool: asyncpg.Pool) -> dict[int, list[int] | None]:
    rows = await pool.fetch("SELECT id, accounts FROM messages ORDER BY id")
    return {r["id"]: None if r["accounts"] is None else sorted(r["accounts"]) for r in rows}


async def written(pool: asyncpg.Pool, users: list[int]) -> dict[int, list[int]]:
    """One message through each writer of `messages`; what each must record, by message id."""
    a, b, c = users
    expected = {
        await deliver(pool, 1, "one", a): [a],  # one mailbox: _DELIVER_ONE
        await deliver(pool, 2, "two", b, a): [a, b],  # several accounts: _DELIVER_LOCAL
        await deliver(pool, 3, "three", b, remote=True): [b],  # local and remote: its own transaction
        await deliver(pool, 4, "four", remote=True): [],  # remote only: queued, in no mailbox
    }
    raws = [message(5, "five"), message(6, "six")]  # a batch of two: _DELIVER_LOCAL's unnest
    items = [LocalBatchItem(values=message_values(raw, summarize(raw)), sent=(None, None, None),
                            entries=[(acct, "INBOX", trace_prefix("b@example.org", "x@example.test"), "x@example.test")])
             for raw, acct in zip(raws, (c, a), strict=True)]
    placed = await commit_local_batch(pool, items)
    expected[placed[0][0][0]] = [c]
    expected[placed[1][0][0]] = [a]
    raw = message(7, "seven")
    await mailstore.append(pool, await inbox(pool, c), raw, summarize(raw), [], None)
    appended = await pool.fetchval("SELECT max(id) FROM messages")
    expected[appended] = [c]
    return expected


async def test_every_writer_records_the_accounts(pool: asyncpg.Pool, users: list[int]) -> None:
    expected = await written(pool, users)
    assert await owners(pool) == expected


async def test_the_migration_backfills_what_the_writers_record(pool: asyncpg.Pool, users: list[int]) -> None:
    expected = await written(pool, users)
    await pool.execute("UPDATE messages SET accounts = NULL")
    await pool.execute(MIGRATION)  # idempotent: what an upgrade from 0013 runs on these rows
    assert await owners(pool) == expected
    names = {r[0] for r in await pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'messages'")}
    assert {"messages_search_heads_by_account", "messages_without_accounts"} <= names, names
    assert "messages_search_heads_trgm" not in names, names


async def test_a_copy_to_another_account_adds_it(pool: asyncpg.Pool, users: list[int]) -> None:
    a, b, c = users
    first = await deliver(pool, 1, "shared later zorblax", a)
    await deliver(pool, 2, "stays", a)
    await mailstore.copy(pool, await inbox(pool, a), [1], await inbox(pool, c))
    await mailstore.copy(pool, await inbox(pool, a), [1], await mailstore.create_mailbox(pool, a, "Kept"))
    got = await owners(pool)
    assert got[first] == [a, c]  # once each, however often copied
    assert sorted(v for k, v in got.items() if k != first) == [[a]]
    assert await mailsearch.search(pool, await inbox(pool, c), mailsearch.Contains("subject", "zorblax")) == [1]


def _heap_rows(plan: dict[str, Any]) -> int:
    """Rows of `messages` a plan fetched from the heap through a bitmap: the candidates, kept or dropped."""
    own = 0
    if plan.get("Node Type") == "Bitmap Heap Scan" and plan.get("Relation Name") == "messages":
        own = plan["Actual Rows"] * plan["Actual Loops"] + plan.get("Rows Removed by Index Recheck", 0)
    return own + sum(_heap_rows(p) for p in plan.get("Plans", []))


async def candidates(pool: asyncpg.Pool, mailbox: int, crit: mailsearch.Criteria) -> int:
    sql, args = mailsearch.search_sql(crit, await mailsearch.available_indexes(pool))
    assert "ANY(ARRAY(SELECT m.id" in sql, sql
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a small store: the planner would scan it
        plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, mailbox, *args))
    return _heap_rows(plan[0]["Plan"])


@pytest.mark.parametrize(("crit", "found"), [
    (mailsearch.Contains("subject", "zorblax"), [2]),
    (mailsearch.Contains("from", "s2@example"), [2]),
    (mailsearch.Contains("header", "zorblax", "Subject"), [2]),
    (mailsearch.AllOf((mailsearch.Contains("subject", "zorblax"), mailsearch.Contains("to", "someone"))), [2]),
])
async def test_other_accounts_mail_adds_no_candidates(pool: asyncpg.Pool, users: list[int],
                                                      crit: mailsearch.Criteria, found: list[int]) -> None:
    a, b, _ = users
    for n, subject in enumerate(("plain", "the zorblax report", "other"), start=1):
        await deliver(pool, n, subject, a)
    box = await inbox(pool, a)
    before = await candidates(pool, box, crit)
    for n in range(10, 40):  # the same sender and subject, another account
        raw = message(2, f"zorblax {n}")
        d = Delivery(sender="b@example.org")
        d.add_local(LocalRecipient(b, "b@example.test"))
        await d.commit(pool, raw, summarize(raw))
    await pool.execute("ANALYZE messages")
    assert await candidates(pool, box, crit) == before <= 2
    assert await mailsearch.search(pool, box, crit) == found == await scan.uids(pool, box, crit)
    assert len(await mailsearch.search(pool, await inbox(pool, b), crit)) == 30


async def test_a_row_without_accounts_is_still_found(pool: asyncpg.Pool, users: list[int]) -> None:
    """As an instance of the previous version writes them during a rolling upgrade."""
    a = users[0]
    await deliver(pool, 1, "plain", a)
    old = await deliver(pool, 2, "the zorblax report", a)
    await pool.execute("UPDATE messages SET accounts = NULL WHERE id = $1", old)
    box = await inbox(pool, a)
    assert await mailsearch.search(pool, box, mailsearch.Contains("subject", "zorblax")) == [2]
    assert await candidates(pool, box, mailsearch.Contains("subject", "zorblax")) == 1


def _prebuild_statements() -> list[str]:
    """The statements docs/operations.md gives for doing 0014's work beforehand on a big store."""
    docs = (REPO / "docs/operations.md").read_text()
    section = docs[docs.index("### Migration 0014"):docs.index("## Backup and restore")]
    statements = re.findall(r"^    ((?:ALTER|UPDATE|CREATE) .*?;)$", section, re.M | re.S)
    assert [s.split()[0] for s in statements] == ["ALTER", "UPDATE", "CREATE", "CREATE"], statements
    return [" ".join(line.strip() for line in s.splitlines()) for s in statements]


async def test_work_done_beforehand_as_documented_is_kept(test_postgres: PgServer) -> None:
    dsn = await test_postgres.new_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await apply_migrations(conn, through=13)
        add_column, *rest = _prebuild_statements()
        await conn.execute(add_column)  # the old version's writers leave it NULL: as below
        await accounts.add_domain(pool, "example.test")
        users = [await accounts.add_account(pool, f"{name}@example.test", "x") for name in ("a", "b", "c")]
        expected = await written(pool, users)
        await conn.execute("UPDATE messages SET accounts = NULL")
        for statement in rest:  # each on its own: CREATE INDEX CONCURRENTLY takes no transaction block
            await conn.execute(statement)
        later = await deliver(pool, 8, "stored since", users[0])
        await conn.execute("UPDATE messages SET accounts = NULL WHERE id = $1", later)
        built = await conn.fetchval("SELECT 'messages_search_heads_by_account'::regclass::oid")
        assert [m.version for m in await apply_migrations(conn, through=14)] == [14]
        assert await conn.fetchval("SELECT 'messages_search_heads_by_account'::regclass::oid") == built
        assert await owners(pool) == {**expected, later: [users[0]]}
    finally:
        await pool.close()
        await conn.close()
