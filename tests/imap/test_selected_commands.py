"""Transcripts of STORE, SEARCH, EXPUNGE, COPY, MOVE, CLOSE, UNSELECT, and updates between sessions."""

from __future__ import annotations

import pytest

from imap import replies
from tests.imap.conftest import World, message


async def selected(world: World, n: int = 3):  # type: ignore[no-untyped-def]
    for i in range(1, n + 1):
        await world.deliver(message(i))
    c = await world.client()
    await c("s SELECT INBOX")
    return c


async def test_store_modes_and_silent(world: World) -> None:
    c = await selected(world)
    assert await c("a STORE 1 +FLAGS (\\Flagged $Label1)") == \
        "* 1 FETCH (FLAGS ($Label1 \\Flagged \\Recent))\r\na OK STORE completed\r\n"
    assert await c("b uid store 1 -Flags (\\Flagged)") == \
        "* 1 FETCH (FLAGS ($Label1 \\Recent) UID 1)\r\nb OK STORE completed\r\n"
    assert await c("c STORE 1:2 FLAGS.SILENT (\\Seen)") == "c OK STORE completed\r\n"
    assert "* 2 FETCH (FLAGS (\\Seen \\Recent))" in await c("d FETCH 2 FLAGS")
    assert (await c("e STORE 1 +FLAGS \\Answered")).startswith("* 1 FETCH (FLAGS (\\Answered \\Seen")


async def test_store_bumps_modseq(world: World) -> None:
    c = await selected(world, 1)
    before = await world.pool.fetchval("SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX'")
    await c("a STORE 1 +FLAGS (\\Seen)")
    after = await world.pool.fetchval("SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX'")
    assert after == before + 1
    assert await world.pool.fetchval("SELECT modseq FROM mailbox_messages WHERE uid = 1") == after
    await c("b STORE 1 +FLAGS (\\Seen)")  # no change: no modseq spent
    assert await world.pool.fetchval("SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX'") == after


@pytest.mark.parametrize("criteria,expected", [
    ("ALL", "1 2 3"),
    ("SEEN", "2"),
    ("UNSEEN", "1 3"),
    ("FLAGGED", "3"),
    ("NOT FLAGGED", "1 2"),
    ("OR SEEN FLAGGED", "2 3"),
    ("SUBJECT \"message 2\"", "2"),
    ("FROM bob3", "3"),
    ("FROM \"Bob Sender\"", "1 2 3"),
    ("TO alice", "1 2 3"),
    ("HEADER Message-ID <m1@", "1"),
    ("HEADER X-Missing \"\"", ""),
    ("HEADER delivered-to alice", "1 2 3"),
    ("BODY \"hello THERE\"", "1 2 3"),
    ("BODY \"100%\"", ""),
    ("TEXT m2@example", "2"),
    ("2:3", "2 3"),
    ("UID 1,3", "1 3"),
    ("LARGER 10 SMALLER 100000", "1 2 3"),
    ("SENTON 2-Nov-2026", "1 2 3"),
    ("SENTBEFORE 1-Nov-2026", ""),
    ("SINCE 1-Jan-2000", "1 2 3"),
    ("BEFORE 1-Jan-2000", ""),
    ("KEYWORD $Work", "1"),
    ("UNKEYWORD $Work", "2 3"),
    ("RECENT", "1 2 3"),
    ("NEW", "1 3"),
    ("OLD", ""),
    ("CHARSET UTF-8 SUBJECT \"message\"", "1 2 3"),
    ("(SEEN) (NOT DELETED)", "2"),
    ("YOUNGER 3600", "1 2 3"),
])
async def test_search_keys(world: World, criteria: str, expected: str) -> None:
    c = await selected(world)
    await c("a STORE 2 +FLAGS (\\Seen)")
    await c("b STORE 3 +FLAGS (\\Flagged)")
    await c("c STORE 1 +FLAGS ($Work)")
    out = await c(f"d SEARCH {criteria}")
    assert out == f"* SEARCH{' ' if expected else ''}{expected}\r\nd OK SEARCH completed\r\n"


async def test_search_non_ascii_and_uid_search(world: World) -> None:
    await world.deliver(message(1, subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe?="))
    await world.deliver(message(2, body="Grüße aus Köln\r\n"))
    c = await world.client()
    await c("s SELECT INBOX")
    word = "Grüße".encode()
    out = await c(b"a SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n" % len(word) + word)
    assert out.startswith("* SEARCH 1\r\n")
    word = "Köln".encode()
    out = await c(b"b UID SEARCH CHARSET UTF-8 BODY {%d+}\r\n" % len(word) + word)
    assert out.startswith("* SEARCH 2\r\n")
    assert "BADCHARSET" in await c("c SEARCH CHARSET KOI9 ALL")


async def test_expunge_and_uid_expunge(world: World) -> None:
    c = await selected(world, 4)
    await c("a STORE 1,3,4 +FLAGS.SILENT (\\Deleted)")
    assert await c("u UID EXPUNGE 90:99") == "u OK EXPUNGE completed\r\n"  # no such UIDs: nothing goes
    assert await c("b UID EXPUNGE 3:4") == "* 3 EXPUNGE\r\n* 3 EXPUNGE\r\nb OK EXPUNGE completed\r\n"
    assert await c("c EXPUNGE") == "* 1 EXPUNGE\r\nc OK EXPUNGE completed\r\n"
    assert await world.pool.fetchval("SELECT count(*) FROM expunged") == 3
    assert await world.pool.fetchval("SELECT count(*) FROM messages") == 1
    used = await world.pool.fetchval("SELECT used_bytes FROM accounts")
    assert used == len(message(2))
    assert "* SEARCH 1" in await c("d SEARCH ALL")


async def test_copy_and_move_with_copyuid(world: World) -> None:
    c = await selected(world, 3)
    out = await c("a COPY 1:2 Archive")
    assert out.startswith("a OK [COPYUID ") and out.rstrip().endswith(" 1:2 1:2] COPY completed")
    out = await c("b UID MOVE 2:3 Trash")
    lines = out.splitlines()
    assert lines[0].startswith("* OK [COPYUID ") and lines[0].endswith(" 2:3 1:2] moved")
    assert lines[1:] == ["* 2 EXPUNGE", "* 2 EXPUNGE", "b OK MOVE completed"]
    assert "MESSAGES 2" in await c("c STATUS Archive (MESSAGES)")
    assert "MESSAGES 2" in await c("d STATUS Trash (MESSAGES)")
    assert await c("e COPY 1 Nope") == replies.TRY_CREATE.encode("e").decode()
    await c("f SELECT Trash")
    assert "* 2 FETCH (UID 2 FLAGS (\\Recent))" in await c("g UID FETCH 2 FLAGS")


async def test_close_expunges_silently_and_unselect_does_not(world: World) -> None:
    c = await selected(world, 2)
    await c("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert await c("b UNSELECT") == "b OK UNSELECT completed\r\n"
    await c("c SELECT INBOX")
    assert await c("d CLOSE") == "d OK CLOSE completed\r\n"
    assert "MESSAGES 1" in await c("e STATUS INBOX (MESSAGES)")


async def test_updates_reach_other_sessions_at_allowed_points(world: World) -> None:
    a = await selected(world, 3)
    b = await world.client()
    await b("s SELECT INBOX")
    await a("x STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert await b("n NOOP") == "* 2 FETCH (FLAGS (\\Flagged))\r\nn OK NOOP completed\r\n"
    uid = await world.deliver(message(9))
    assert uid == 4
    out = await b("f FETCH 1 FLAGS")
    assert "* 4 EXISTS" in out
    await a("y STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a("z EXPUNGE")
    out = await b("g FETCH 1 FLAGS")  # no EXPUNGE during FETCH: numbers stay put
    # message 1 is gone from the store: nothing to send, and the hint that it was expunged (as Dovecot)
    assert out == "g OK [EXPUNGEISSUED] FETCH completed\r\n"
    out = await b("h SEARCH ALL")
    assert out == "* SEARCH 2 3 4\r\nh OK SEARCH completed\r\n"
    out = await b("i NOOP")
    assert out == "* 1 EXPUNGE\r\ni OK NOOP completed\r\n"
    assert "* 3 FETCH (UID 4)\r\n" in await b("j UID FETCH 4 UID")


async def test_recent_belongs_to_one_session(world: World) -> None:
    a = await selected(world, 1)
    b = await world.client()
    assert "* 0 RECENT" in await b("s SELECT INBOX")
    await world.deliver(message(2))
    out_a = await a("n NOOP")
    out_b = await b("n NOOP")
    assert "* 2 EXISTS" in out_a and "* 2 EXISTS" in out_b
    assert ("* 2 RECENT" in out_a) != ("* 1 RECENT" in out_b and "* 0 RECENT" in out_b)
