"""FETCH transcripts: every item, sections, partials, \\Seen, and data served as stored."""

from __future__ import annotations

import asyncio

import pytest

from mailcore.mime.precompute import summarize
from tests.imap.conftest import World, message

MULTIPART = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: parts\r\n"
    b"Message-ID: <mp@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@example.org\r\nSubject: inner\r\nX-Inner: yes\r\n\r\ninner body\r\n"
    b"--XX--\r\n"
)


def prefix_len(world_user: str = "alice@example.test") -> int:
    return len(b"Return-Path: <bob@example.org>\r\nDelivered-To: " + world_user.encode() + b"\r\n")


async def selected(world: World, *raws: bytes):  # type: ignore[no-untyped-def]
    for raw in raws:
        await world.deliver(raw)
    c = await world.client()
    await c("s SELECT INBOX")
    return c


async def test_thunderbird_header_sync(world: World) -> None:
    raw = message(1, "hi", X_Priority="3", Received="from x by y", References="<a@b>")
    c = await selected(world, raw)
    out = await c("a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject "
                  "Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To "
                  "Received)])")
    head = ("From: Bob Sender <bob1@example.org>\r\nTo: Alice <alice@example.test>\r\nSubject: hi\r\n"
            "Message-ID: <m1@example.org>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nX-Priority: 3\r\n"
            "Received: from x by y\r\nReferences: <a@b>\r\n\r\n")
    size = len(raw) + prefix_len()
    expected = (f"* 1 FETCH (UID 1 RFC822.SIZE {size} FLAGS (\\Recent) BODY[HEADER.FIELDS (From To Cc Bcc "
                "Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type "
                f"Reply-To Received)] {{{len(head)}}}\r\n{head})\r\na OK FETCH completed\r\n")
    assert out == expected
    assert "\\Seen" not in await c("b FETCH 1 FLAGS")


async def test_n_star_above_highest_uid_returns_last(world: World) -> None:
    c = await selected(world, message(1), message(2))
    out = await c("a UID FETCH 10:* (FLAGS)")
    assert out.startswith("* 2 FETCH (UID 2 FLAGS")


async def test_envelope_and_bodystructure_are_served_as_stored(world: World) -> None:
    c = await selected(world, MULTIPART)
    s = summarize(MULTIPART)
    out = await c("a FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
    assert out.startswith(f"* 1 FETCH (ENVELOPE {s.envelope} BODYSTRUCTURE {s.bodystructure} BODY {s.body})")
    # and taken from the column, not re-parsed: change the stored text, see the change
    await world.pool.execute("UPDATE messages SET envelope = '(NIL \"stored\" NIL NIL NIL NIL NIL NIL NIL NIL)'")
    assert '(NIL "stored"' in await c("b FETCH 1 ENVELOPE")


@pytest.mark.parametrize("section,expected", [
    ("1", b"first part"),
    ("1.MIME", b"Content-Type: text/plain; charset=utf-8\r\n\r\n"),
    ("2.HEADER", b"From: inner@example.org\r\nSubject: inner\r\nX-Inner: yes\r\n\r\n"),
    ("2.TEXT", b"inner body"),
    ("2.1", b"inner body"),
    ("2.HEADER.FIELDS (x-inner)", b"X-Inner: yes\r\n\r\n"),
    ("2.HEADER.FIELDS.NOT (From x-inner)", b"Subject: inner\r\n\r\n"),
    ("3", b""),
])
async def test_body_sections(world: World, section: str, expected: bytes) -> None:
    c = await selected(world, MULTIPART)
    out = await c.raw(f"a FETCH 1 BODY.PEEK[{section}]\r\n".encode())
    name = section.split(" (")[0]
    assert out.startswith(f"* 1 FETCH (BODY[{name}".encode())
    assert b"{%d}\r\n" % len(expected) + expected + b")\r\n" in out


async def test_whole_message_header_text_and_partial(world: World) -> None:
    raw = message(1)
    c = await selected(world, raw)
    served = b"Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.test\r\n" + raw
    out = await c.raw(b"a FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<5.10>)\r\n")
    header, body = served.split(b"\r\n\r\n", 1)
    assert b"BODY[] {%d}\r\n%s" % (len(served), served) in out
    assert b"BODY[HEADER] {%d}\r\n%s\r\n\r\n" % (len(header) + 4, header) in out
    assert b"BODY[TEXT] {%d}\r\n%s" % (len(body), body) in out
    assert b"BODY[]<5> {10}\r\n" + served[5:15] in out
    out = await c.raw(b"b FETCH 1 (RFC822.HEADER RFC822.TEXT)\r\n")
    assert b"RFC822.HEADER {" in out and b"RFC822.TEXT {" in out


async def test_body_fetch_sets_seen_and_reports_it(world: World) -> None:
    c = await selected(world, message(1))
    out = await c("a FETCH 1 BODY[TEXT]")
    assert "FLAGS (\\Seen \\Recent)" in out
    assert "\\Seen" in await c("b FETCH 1 FLAGS")
    out = await c("c FETCH 1 RFC822")
    assert out.startswith("* 1 FETCH (RFC822 {")


async def test_fetch_macros_and_bad_sequence(world: World) -> None:
    c = await selected(world, message(1))
    out = await c("a FETCH 1 ALL")
    assert "FLAGS" in out and "INTERNALDATE" in out and "RFC822.SIZE" in out and "ENVELOPE" in out
    assert (await c("b FETCH 5 FLAGS")).startswith("b BAD")
    assert (await c("c FETCH 1 (BINARY[1])")).startswith("c BAD")


async def test_large_message_is_streamed_in_chunks(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from imap import fetch

    monkeypatch.setattr(fetch, "RAW_INLINE_BELOW", 1000)
    monkeypatch.setattr(fetch, "STREAM_CHUNK", 4096)
    body = ("0123456789abcdef" * 4000 + "\r\n").encode()
    raw = message(1, body=body.decode())
    c = await selected(world, raw)
    served = b"Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.test\r\n" + raw
    out = await c.raw(b"a FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT]<3.20000> BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")
    assert b"BODY[] {%d}\r\n" % len(served) + served + b" " in out
    assert b"BODY[TEXT]<3> {20000}\r\n" + body[3:20003] + b" " in out
    assert out.endswith(b"BODY[HEADER.FIELDS (Subject)] {22}\r\nSubject: message 1\r\n\r\n)\r\na OK FETCH completed\r\n")


async def test_many_messages_in_batches(world: World) -> None:
    for i in range(300):
        await world.deliver(message(i))
    c = await world.client()
    await c("s SELECT INBOX")
    out = await c("a UID FETCH 1:* (UID FLAGS)")
    assert out.count(" FETCH (") == 300 and "* 300 FETCH (UID 300 " in out


def test_header_sync_plan_reads_no_raw_bytes() -> None:
    from imap import fetch
    from imap.commands import FetchAtt, Section

    fields = FetchAtt("BODY", Section((), "HEADER.FIELDS", ("From", "Subject")), peek=True)
    plan = fetch.Plan([FetchAtt("UID"), FetchAtt("RFC822.SIZE"), FetchAtt("FLAGS"), fields])
    assert not plan.needs_raw and plan.batch == fetch.BATCH_WITHOUT_BODIES
    assert fetch.Plan([FetchAtt("BODY", Section(), peek=True)]).needs_raw
    assert fetch.Plan([FetchAtt("ENVELOPE"), FetchAtt("BODYSTRUCTURE")]).columns == ["bodystructure", "envelope"]


@pytest.mark.parametrize("block,names,exclude,expected", [
    (b"A: 1\r\nB: 2\r\n continued\r\nC: 3\r\n\r\n", {"b"}, False, b"B: 2\r\n continued\r\n\r\n"),
    (b"A: 1\r\nB: 2\r\n continued\r\nC: 3\r\n\r\n", {"b"}, True, b"A: 1\r\nC: 3\r\n\r\n"),
    (b"a: 1\nA: 2\n\nbody", {"a"}, False, b"a: 1\nA: 2\n\r\n"),
    (b"", {"a"}, False, b"\r\n"),
])
def test_header_fields(block: bytes, names: set[str], exclude: bool, expected: bytes) -> None:
    from imap.fetch import header_fields

    assert header_fields(block, frozenset(names), exclude) == expected


SYNC = ("a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID "
        "Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")


@pytest.mark.parametrize("command", [
    SYNC,
    "a FETCH 2:* (FLAGS UID MODSEQ ENVELOPE BODY.PEEK[HEADER.FIELDS (Date From To Cc Bcc Subject Message-ID "
    "Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)] BODYSTRUCTURE BODY)",
    "a UID FETCH 1,3:9,12:* (UID FLAGS RFC822.SIZE)",
])
async def test_batches_built_by_the_database_match_those_formatted_here(
        world: World, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    from imap import fetch
    for i in range(1, 24):
        await world.deliver(message(i, f"m {i} % caf\u00e9", X_Priority=str(i % 5)) if i != 17 else MULTIPART)
    await world.pool.execute(  # one message stored before sync_fields existed: formatted here
        "UPDATE messages SET sync_fields = NULL WHERE id = (SELECT min(id) FROM messages)")
    first = await world.client()
    await first("s SELECT INBOX")  # takes \Recent: its batches are formatted here
    await first("f STORE 2:6 +FLAGS (\\Seen $Label1)")
    await first("f STORE 9 FLAGS (\\Flagged \\Answered)")
    await first("f STORE 3 +FLAGS (\\Deleted)")
    monkeypatch.setattr(fetch, "STREAMED_BATCH", 5)
    real = fetch.streamed

    def rows_only(atts):  # type: ignore[no-untyped-def]
        plan = real(atts)
        return plan and fetch.Streamed(plan.fmt, plan.columns, plan.kinds)

    c = await world.client()
    await c("s SELECT INBOX")
    for client in (c, first):
        built = await client(command)
        assert real([]).wire is not None
        monkeypatch.setattr(fetch, "streamed", rows_only)
        formatted = await client(command)
        monkeypatch.setattr(fetch, "streamed", real)
        assert built == formatted
        assert built.count(" FETCH (") >= 15


async def test_a_header_sync_is_the_same_with_or_without_a_second_connection(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches built on two connections at once come out in order, the same as on one (when the pool
    has no two idle connections, the FETCH does not wait for a second one)."""
    from imap import fetch
    for i in range(1, 24):
        await world.deliver(message(i, f"m {i}") if i != 17 else MULTIPART)
    await world.pool.execute(  # formatted here, on the connection of its batch
        "UPDATE messages SET sync_fields = NULL WHERE id = (SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET 12)")
    monkeypatch.setattr(fetch, "STREAMED_BATCH", 5)
    monkeypatch.setattr(fetch, "MIN_SHARED_BATCH", 2)
    await asyncio.gather(*(world.pool.fetchval("SELECT pg_sleep(0.01)") for _ in range(3)))  # 3 connections
    first = await world.client()
    await first("s SELECT INBOX")  # takes \Recent, so the next session's batches are built by the database
    c = await world.client()
    await c("s SELECT INBOX")
    assert world.pool.get_idle_size() >= 2
    pipelined = await c(SYNC)
    held = [await world.pool.acquire() for _ in range(world.pool.get_idle_size() - 1)]
    assert world.pool.get_idle_size() == 1  # left for the FETCH itself: no second one
    try:
        serial = await c(SYNC)
    finally:
        for conn in held:
            await world.pool.release(conn)
    assert pipelined == serial
    assert [int(line.split()[1]) for line in serial.splitlines() if " FETCH (" in line] == list(range(1, 24))


# RFC 3501 §9 header-fld-name is an astring: a name that is not an atom goes back quoted or as a literal,
# never as its bare text (which split "a b" in two, ended the list at ')' or the section at ']', and broke
# the response line at a literal's CR LF)
@pytest.mark.parametrize("asked, answered", [
    (b'("Subject")', b"(Subject)"),
    (b'("a b" Subject)', b'("a b" Subject)'),
    (b'("x)y")', b'("x)y")'),
    (b'("x]y")', b'("x]y")'),
    (b'("")', b'("")'),
    (b'("a\\"b")', b'("a\\"b")'),
    (b"({4+}\r\na\r\nb)", b"({4}\r\na\r\nb)"),
])
async def test_header_field_names_are_echoed_as_astrings(world: World, asked: bytes, answered: bytes) -> None:
    c = await selected(world, message(1, "hi"))
    out = await c.raw(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS " + asked + b"]<0.100>)\r\n")
    assert out.startswith(b"* 1 FETCH (BODY[HEADER.FIELDS " + answered + b"]<0> {"), out
    assert out.endswith(b")\r\na OK FETCH completed\r\n")
