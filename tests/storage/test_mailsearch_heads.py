"""The header trigram index of migration 0012: it narrows FROM/TO/CC/BCC/SUBJECT (and HEADER of those names)
to the same answers as the plain scan, leaves HEADER of the other sync fields to the scan, holds none of
their values, and the migration upgrades a store with or without pg_trgm, or with the index built beforehand."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from mailcore.mime.precompute import summarize
from storage import accounts, mailsearch, mailstore
from storage.delivery import Delivery, LocalRecipient
from storage.migrations import apply_migrations, available
from tests.pg import PgServer
from tests.storage import scan

REPO = Path(__file__).resolve().parents[2]
HEADS_INDEX = "messages_search_heads_trgm"  # 0012's name; 0014 replaces it (test_mailsearch_accounts)
# Every message carries all of these (the fields the index leaves out), with values unique to it.
OTHER_FIELDS = (b"Message-ID: <mid{n}.qxv@example.org>\r\nDate: Mon, 1 Jan 2024 10:{n:02d}:00 +0000\r\n"
                b"References: <ref{n}.qxv@example.org>\r\n <refb{n}.qxv@example.org>\r\n"
                b"In-Reply-To: <irt{n}.qxv@example.org>\r\nContent-Type: text/plain; boundary=\"bnd{n}qxv\"\r\n")
# One message per row: the field line, then a key and needle that find it (and only it) through the index.
INDEXED_CASES = [
    (b"From: Quentin Zyx <qzyx@example.org>", "from", "", "qzyx@example"),
    (b"From: Quentin Zyx <qzyx@example.org>", "from", "", "Quentin Zyx"),  # only in the raw line
    (b"To: Tobias Wren <tobias.wren@example.test>", "to", "", "tobias.wren"),
    (b"Cc: Cecil <ccperson@example.test>", "cc", "", "Cecil <ccp"),
    (b"Bcc: hiddenbcc@example.test", "bcc", "", "hiddenbcc"),
    (b"Subject: Quarterly figures zorblax", "subject", "", "zorblax"),
    (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_zw=C3=B6lf?=", "subject", "", "grüße zwölf"),  # decoded
    (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_zw=C3=B6lf?=", "subject", "", "_zw=C3=B6lf"),  # raw
    (b"Subject: first part\r\n second zquuxline", "subject", "", "ZQUUXLINE"),  # a continuation line
    (b"SUBJECT : Shouting spaced ywvut", "subject", "", "ywvut"),
    (b"Subject: Quarterly figures zorblax", "header", "Subject", "figures zorb"),
    (b"From: Quentin Zyx <qzyx@example.org>", "header", "FROM", "Zyx <"),
    (b"Bcc: hiddenbcc@example.test", "header", "bcc", "bcc@example"),
    (b"Subject: caf\xe9 8bit wxyzq", "subject", "", "8bit wxyzq"),  # raw 8-bit bytes, NUL-free escaped form
]
# Values present only in a field the index leaves out: found by HEADER <that field> through the scan, and
# not by the keys the index narrows.
OTHER_CASES = [
    ("header", "Message-ID", "mid3.qxv@", [3]),
    ("header", "message-id", "<mid5.qxv", [5]),
    ("header", "References", "refb4.qxv", [4]),
    ("header", "In-Reply-To", "irt2.qxv", [2]),
    ("header", "Date", "10:06:00", [6]),
    ("header", "Content-Type", "bnd7qxv", [7]),
    ("from", "", "mid3.qxv", []),
    ("subject", "", "refb4.qxv", []),
    ("header", "Subject", "bnd7qxv", []),
    # a needle running from the Subject line into the Message-ID line after it: as the scan answers
    ("header", "Subject", "zorblax\r\nMessage-ID: <mid", [6, 11]),
]


def message(n: int, line: bytes) -> bytes:
    return line + b"\r\n" + OTHER_FIELDS.replace(b"{n}", b"%d" % n).replace(b"{n:02d}", b"%02d" % n) + b"\r\nbody\r\n"


@pytest.fixture
async def box(pool: asyncpg.Pool) -> int:
    """INBOX with the messages of INDEXED_CASES, UIDs 1.. in order."""
    await accounts.add_domain(pool, "example.test")
    account = await accounts.add_account(pool, "u@example.test", "x")
    for n, (line, *_) in enumerate(INDEXED_CASES, start=1):
        data = message(n, line)
        d = Delivery(sender="b@example.org")
        d.add_local(LocalRecipient(account, "u@example.test", "INBOX"))
        await d.commit(pool, data, summarize(data))
    mailbox = await mailstore.get_mailbox(pool, account, "INBOX")
    assert mailbox is not None
    return mailbox.id


@pytest.mark.parametrize(("n", "where", "field", "needle"),
                         [(n, w, f, s) for n, (_, w, f, s) in enumerate(INDEXED_CASES, start=1)])
async def test_each_indexed_field_is_found_through_the_index(pool: asyncpg.Pool, box: int, n: int, where: str,
                                                             field: str, needle: str) -> None:
    crit = mailsearch.Contains(where, needle, field)
    sql, _ = mailsearch.search_sql(crit, frozenset({"fields"}))
    assert "ANY(ARRAY(SELECT m.id" in sql, sql  # narrowed by the index, not scanned
    found = await mailsearch.search(pool, box, crit)
    assert n in found
    assert found == await scan.uids(pool, box, crit)


@pytest.mark.parametrize(("where", "field", "needle", "uids"), OTHER_CASES)
async def test_values_of_the_other_fields_are_found_as_by_the_scan(pool: asyncpg.Pool, box: int, where: str,
                                                                   field: str, needle: str, uids: list[int]) -> None:
    crit = mailsearch.Contains(where, needle, field)
    found = await mailsearch.search(pool, box, crit)
    assert found == uids
    assert found == await scan.uids(pool, box, crit)


@pytest.mark.parametrize("name", ["Message-ID", "Date", "References", "In-Reply-To", "Content-Type"])
async def test_header_of_a_field_left_out_is_not_narrowed(name: str) -> None:
    sql, _ = mailsearch.search_sql(mailsearch.Contains("header", "somevalue", name), frozenset({"fields"}))
    assert "ANY(ARRAY" not in sql, sql


# sync_fields as delivery stores them: the field's lines then the blank line. Kept: what the five
# indexed fields hold; dropped: the values of the nine other sync fields, whatever their case.
HEADS_CASES = [
    (b"From: A <from1@x.example>\r\n", ["from1@x.example"], []),
    (b"to: to1@x.example,\r\n\tto2@x.example\r\n", ["to1@x.example", "\tto2@x.example"], []),
    (b"CC: cc1@x.example\r\n", ["cc1@x.example"], []),
    (b"Bcc: bcc1@x.example\r\n", ["bcc1@x.example"], []),
    (b"Subject: hello\r\n  world\r\n", ["hello\r\n  world"], []),
    (b"Message-ID: <m1@x>\r\nmessage-id: <m2@x>\r\nMESSAGE-ID: <m3@x>\r\n", [], ["m1@x", "m2@x", "m3@x"]),
    (b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n", [], ["2024"]),
    (b"References: <r1@x>\r\n <r2@x>\r\n\t<r3@x>\r\n", [], ["r1@x", "r2@x", "r3@x"]),
    (b"In-Reply-To: <i1@x>\r\nReply-To: rt@x.example\r\n", [], ["i1@x", "rt@x"]),
    (b"Content-Type: multipart/mixed;\r\n boundary=\"b0undary\"\r\n", [], ["multipart", "b0undary"]),
    (b"X-Priority: 3 (Normal)\r\nPriority: urgent\r\nNewsgroups: comp.mail\r\n", [], ["normal", "urgent", "comp"]),
    (b"Message-ID: <m1@x>\r\nSubject: kept\r\nDate: d1\r\nFrom: f@x\r\nReferences: <r1@x>\r\n <r2@x>\r\n"
     b"To: t@x\r\n", ["subject: kept\r\n", "from: f@x\r\n", "to: t@x"], ["m1@x", "d1", "r1@x", "r2@x"]),
    (b"Subject: caf\xe9 \x00 \\x\r\n", ["caf\\351 \\000 \\\\x"], []),  # the escape form, as SEARCH compares
]


@pytest.mark.parametrize(("fields", "kept", "dropped"), HEADS_CASES)
async def test_the_index_holds_the_five_fields_only(pool: asyncpg.Pool, fields: bytes, kept: list[str],
                                                    dropped: list[str]) -> None:
    heads = await pool.fetchval("SELECT mail_search_heads($1::bytea)", fields + b"\r\n")
    for text in kept:
        assert text.lower() in heads, (text, heads)
    for text in dropped:
        assert text.lower() not in heads.lower(), (text, heads)


async def test_explain_uses_the_new_index_for_subject(pool: asyncpg.Pool, box: int) -> None:
    sql, args = mailsearch.search_sql(mailsearch.Contains("subject", "zorblax"), frozenset({"fields"}))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, box, *args))
    assert mailsearch.INDEX_NAMES["fields"] in plan, plan
    names = {r[0] for r in await pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'messages'")}
    assert "messages_search_fields_trgm" not in names, names


async def _migrated_before_0012(test_postgres: PgServer) -> tuple[str, asyncpg.Connection]:
    """A new database with every migration before 0012 applied and recorded: its DSN, a connection to it."""
    dsn = await test_postgres.new_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now())")
    for m in available():
        if m.version < 12:
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
    return dsn, conn


async def _index_defs(conn: asyncpg.Connection) -> dict[str, bool]:
    rows = await conn.fetch("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                            " WHERE i.indrelid = 'messages'::regclass AND c.relname LIKE 'messages_search%'")
    return {r["relname"]: r["indisvalid"] for r in rows}


async def test_the_migration_replaces_the_old_index(test_postgres: PgServer) -> None:
    _, conn = await _migrated_before_0012(test_postgres)
    try:
        assert await _index_defs(conn) == {"messages_search_fields_trgm": True}
        assert [m.version for m in await apply_migrations(conn, through=13)] == [12, 13]
        assert await _index_defs(conn) == {HEADS_INDEX: True}
        assert await conn.fetchval("SELECT to_regprocedure('mail_search_fields(bytea,text,text,text,text)')")
    finally:
        await conn.close()


def _prebuild_statements() -> list[str]:
    """What docs/operations.md tells an admin to run before upgrading a big store: the migration's two
    functions, then the index built CONCURRENTLY (as the docs write it)."""
    migration = (REPO / "storage/migrations/0012_search_heads_trgm.sql").read_text()
    functions = re.findall(r"^CREATE OR REPLACE FUNCTION .*?;$", migration, re.M | re.S)
    docs = (REPO / "docs/operations.md").read_text()
    index = re.search(r"^ *(CREATE INDEX CONCURRENTLY messages_search_heads_trgm .*?;)$", docs, re.M | re.S)
    assert len(functions) == 2 and index is not None
    return [*functions, index.group(1)]


@pytest.mark.parametrize("failed_build", [False, True])
async def test_an_index_built_beforehand_is_kept(test_postgres: PgServer, failed_build: bool) -> None:
    _, conn = await _migrated_before_0012(test_postgres)
    try:
        for statement in _prebuild_statements():
            await conn.execute(statement)
        if failed_build:  # what an interrupted CREATE INDEX CONCURRENTLY leaves behind
            await conn.execute(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{HEADS_INDEX}'::regclass")
        before = await conn.fetchval(f"SELECT '{HEADS_INDEX}'::regclass::oid")
        await apply_migrations(conn, through=13)
        assert await _index_defs(conn) == {HEADS_INDEX: True}
        after = await conn.fetchval(f"SELECT '{HEADS_INDEX}'::regclass::oid")
        assert (after != before) == failed_build  # kept as built, or rebuilt when invalid
    finally:
        await conn.close()


async def test_without_pg_trgm_search_scans_as_before(test_postgres: PgServer) -> None:
    dsn, conn = await _migrated_before_0012(test_postgres)
    try:
        await conn.execute("DROP EXTENSION pg_trgm CASCADE")  # as if 0007 could not create it
        await apply_migrations(conn)
        assert await _index_defs(conn) == {}
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        assert "fields" not in await mailsearch.available_indexes(pool)
        await accounts.add_domain(pool, "example.test")
        account = await accounts.add_account(pool, "u@example.test", "x")
        for n, (line, *_) in enumerate(INDEXED_CASES[:2], start=1):
            d = Delivery(sender="b@example.org")
            d.add_local(LocalRecipient(account, "u@example.test", "INBOX"))
            await d.commit(pool, message(n, line), summarize(message(n, line)))
        mailbox = await mailstore.get_mailbox(pool, account, "INBOX")
        assert mailbox is not None
        assert await mailsearch.search(pool, mailbox.id, mailsearch.Contains("from", "quentin")) == [1, 2]
        assert await mailsearch.search(pool, mailbox.id, mailsearch.Contains("header", "mid2.qxv", "message-id")) == [2]
    finally:
        await pool.close()
