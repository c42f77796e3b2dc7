"""Hostile and odd input over a real listener: every command gets a tagged BAD or NO with a sensible
code (never NO [SERVERBUG], a dropped connection or a logged traceback), and nothing is half-stored."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.hangguard import no_hang
from tests.imap.conftest import PASSWORD, USER, Listening, message
from tests.imap.test_server import Line


async def session(listening: Listening, select: str | None = "INBOX") -> Line:
    """A logged-in raw connection, with `select` selected."""
    c = await Line.open(listening.imap_port)
    await c.line()
    assert (await c.cmd(f'L LOGIN {USER} "{PASSWORD}"'))[-1].startswith("L OK")
    if select is not None:
        assert (await c.cmd(f"S SELECT {select}"))[-1].startswith("S OK")
    return c


async def send(c: Line, tag: str, data: bytes) -> list[str]:
    """Send one command (literals inline, non-synchronising) and read up to its tagged reply."""
    c.writer.write(data + b"\r\n")
    out = []
    while True:
        line = await c.line(within=10)
        out.append(line)
        if line.startswith(tag + " ") or not line:
            return out


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def messages_in(c: Line, mailbox: str) -> str:
    out = await c.cmd(f"st STATUS {mailbox} (MESSAGES UIDNEXT)")
    assert out[-1].startswith("st OK"), out
    return out[0]


# `&AAA-` is modified UTF-7 for U+0000: a name no mailbox can have (PostgreSQL text holds no NUL)
@pytest.mark.parametrize("command", [
    b"SELECT &AAA-", b"EXAMINE &AAA-", b"DELETE &AAA-", b"RENAME &AAA- x", b"SUBSCRIBE &AAA-",
    b"UNSUBSCRIBE &AAA-", b"STATUS &AAA- (MESSAGES)", b"APPEND &AAA- {3+}\r\nabc", b"COPY 1 &AAA-",
    b"MOVE 1 &AAA-", b"UID MOVE 1 a&AAA-b", b"CREATE &AAA-",
])
async def test_mailbox_name_with_an_encoded_nul_is_bad(listening: Listening, command: bytes,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a " + command)
    assert out[-1].startswith("a BAD invalid mailbox name"), out
    assert (await c.cmd("z NOOP"))[-1].startswith("z OK")
    no_errors_logged(caplog)


async def test_lone_surrogate_in_a_mailbox_name_is_bad_in_our_words(listening: Listening) -> None:
    c = await session(listening, select=None)
    out = await send(c, "a", b"a SELECT &2D0-")
    assert out == ["a BAD invalid mailbox name: unpaired UTF-16 surrogate in mailbox name\r\n"]


# RFC 9051 §9 number64: nothing a client may send is above 2^63-1, the store's bigint
@pytest.mark.parametrize("command", [
    b"SEARCH LARGER 9223372036854775808", b"SEARCH SMALLER 18446744073709551616",
    b"SEARCH LARGER 99999999999999999999", b"SEARCH OLDER 99999999999999999999",
    b"SEARCH YOUNGER 99999999999999999999", b"SEARCH MODSEQ 99999999999999999999",
    b"SEARCH NOT LARGER 9223372036854775808", b"FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)",
    b"STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS (\\Seen)",
    b"FETCH 1 BODY[]<9223372036854775808.1>",
])
async def test_numbers_beyond_64_bits_are_bad(listening: Listening, command: bytes,
                                              caplog: pytest.LogCaptureFixture) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a " + command)
    assert out[-1].startswith("a BAD") and "too large" in out[-1], out
    assert (await c.cmd("b SEARCH LARGER 9223372036854775807"))[-1].startswith("b OK")
    no_errors_logged(caplog)


NO_CHARSET = "a NO [BADCHARSET (US-ASCII UTF-8 ISO-8859-1 "  # RFC 3501 §6.4.4: NO (not BAD), with the list


# codecs Python knows that are no IANA charsets (or no text encodings at all), charsets that give NUL or
# lone surrogates, and names no charset has
@pytest.mark.parametrize(("command", "reply"), [
    (b"SEARCH CHARSET base64 SUBJECT x", NO_CHARSET),
    (b"SEARCH CHARSET rot13 SUBJECT x", NO_CHARSET),
    (b"SEARCH CHARSET zlib BODY x", NO_CHARSET),
    (b"SEARCH CHARSET hex TEXT x", NO_CHARSET),
    (b"SEARCH CHARSET undefined SUBJECT x", NO_CHARSET),  # Python's codec that fails on every byte
    (b"SEARCH CHARSET unicode_escape HEADER X-A \"\\\\x00\"", NO_CHARSET),
    (b"SEARCH CHARSET idna SUBJECT \"xn--a.\"", NO_CHARSET),
    (b"SEARCH CHARSET utf-16 SUBJECT x", NO_CHARSET),
    (b"SEARCH CHARSET utf-7 SUBJECT \"+AAA-\"", NO_CHARSET),  # NUL
    (b"SEARCH CHARSET utf-7 SUBJECT \"+2D0-\"", NO_CHARSET),  # a lone surrogate
    (b"SEARCH CHARSET x-user-defined SUBJECT x", NO_CHARSET),
    (b"SEARCH CHARSET \"\" SUBJECT x", NO_CHARSET),
    (b"SEARCH CHARSET {6+}\r\nUTF-8\x00 SUBJECT x", "a BAD NUL in literal"),
    (b"SEARCH CHARSET cp65001 SUBJECT x", NO_CHARSET),  # Python's alias of UTF-8: no IANA name
    (b"SEARCH CHARSET KOI9 ALL", NO_CHARSET),
    (b"SEARCH CHARSET bogus SUBJECT (", "a BAD"),  # syntax first
    (b"SEARCH CHARSET utf-8 SUBJECT \"\xff\"", "a BAD search string does not match its charset"),
    (b"SEARCH CHARSET US-ASCII SUBJECT x", "a OK"),
    (b"SEARCH CHARSET iso-8859-1 SUBJECT \"\xe9\"", "a OK"),
    (b"SEARCH CHARSET Windows-1252 SUBJECT \"\x80\"", "a OK"),
])
async def test_search_charsets(listening: Listening, command: bytes, reply: str,
                               caplog: pytest.LogCaptureFixture) -> None:
    c = await session(listening)
    out = await send(c, "a", b"a " + command)
    assert out[-1].startswith(reply), out
    assert (await c.cmd("z NOOP"))[-1].startswith("z OK")
    no_errors_logged(caplog)


async def test_search_with_an_unsupported_charset_outside_selected_is_bad_for_the_state(
        listening: Listening) -> None:
    c = await session(listening, select=None)
    out = await send(c, "a", b"a SEARCH CHARSET rot13 SUBJECT x")
    assert out == ["a BAD command not valid in this state\r\n"]


@pytest.mark.parametrize("when", [b"01-Jan-0001 00:00:00 +0100", b"31-Dec-9999 23:59:59 -2359"])
async def test_append_date_time_outside_the_utc_calendar_is_bad(listening: Listening, when: bytes,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    c = await session(listening, select=None)
    raw = message(1)
    out = await send(c, "a", b'a APPEND INBOX "%s" {%d+}\r\n' % (when, len(raw)) + raw)
    assert out[-1] == "a BAD invalid date-time\r\n", out
    assert "MESSAGES 0 " in await messages_in(c, "INBOX")
    edge = await send(c, "b", b'b APPEND INBOX "01-Jan-0001 00:00:00 -0100" {%d+}\r\n' % len(raw) + raw)
    assert edge[-1].startswith("b OK [APPENDUID"), edge
    no_errors_logged(caplog)


def multiappend(tag: str, *messages: bytes) -> bytes:
    """One APPEND of several messages (RFC 3502), as non-synchronising literals."""
    return (b"%s APPEND INBOX" % tag.encode()
            + b"".join(b" {%d+}\r\n" % len(m) + m for m in messages))


async def test_multiappend_with_an_empty_message_stores_none(listening: Listening,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    c = await session(listening, select=None)
    out = await send(c, "a", multiappend("a", message(1), message(2), b""))
    assert out[-1] == "a NO empty message\r\n", out
    assert "MESSAGES 0 UIDNEXT 1)" in await messages_in(c, "INBOX")
    out = await send(c, "b", multiappend("b", message(1), message(2)))
    assert out[-1].startswith("b OK [APPENDUID ") and " 1:2] " in out[-1], out
    no_errors_logged(caplog)


async def test_multiappend_over_quota_at_the_second_message_stores_none(listening: Listening) -> None:
    first, second = message(1), message(2, body="x" * 5000 + "\r\n")
    await listening.world.pool.execute("UPDATE accounts SET quota_bytes = $1", len(first) + 1000)
    c = await session(listening, select=None)
    out = await send(c, "a", multiappend("a", first, second))
    assert out[-1].startswith("a NO [OVERQUOTA]"), out
    assert "MESSAGES 0 UIDNEXT 1)" in await messages_in(c, "INBOX")
    assert await listening.world.pool.fetchval("SELECT used_bytes FROM accounts") == 0


@pytest.mark.parametrize(("command", "reply"), [
    (b"SEARCH SUBJECT {100000+}\r\n" + b"a" * 100000, "a NO [LIMIT]"),
    (b"SEARCH HEADER X-A {100000+}\r\n" + b"a" * 100000, "a NO [LIMIT]"),
    (b"SEARCH " + b" ".join([b"OR FROM {5000+}\r\n" + b"b" * 5000 + b" TO x"] * 2), "a NO [LIMIT]"),
    (b"SEARCH SUBJECT {8192+}\r\n" + b"a" * 8192, "a OK"),
    (b"SEARCH TEXT {100000+}\r\n" + b"a" * 100000, "a NO [LIMIT]"),
    (b"SEARCH BODY {8193+}\r\n" + b"a" * 8193, "a NO [LIMIT]"),
    (b"SEARCH NOT BODY {8192+}\r\n" + b"a" * 8192, "a OK"),
    (b"SEARCH " + b" ".join([b"OR BODY {900000+}\r\n" + b"b" * 900000 + b" TEXT x"]), "a NO [LIMIT]"),
    (b"SEARCH BODY {5000+}\r\n" + b"b" * 5000 + b" SUBJECT {5000+}\r\n" + b"s" * 5000, "a NO [LIMIT]"),
    (b"SEARCH HEADER {9000+}\r\n" + b"X" * 9000 + b" a", "a NO [LIMIT]"),
], ids=["subject", "header", "two-froms", "at-the-limit", "text", "body", "body-at-the-limit", "or-body",
        "body-and-subject", "header-field-name"])
async def test_long_search_strings_are_refused_quickly(listening: Listening, command: bytes, reply: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a " + command)
    assert out[-1].startswith(reply), out
    no_errors_logged(caplog)


# RFC 9051 §9: a server MUST NOT generate flag-extensions, so it must not store them to echo in FLAGS
@pytest.mark.parametrize("command", [
    b"STORE 1 +FLAGS (\\Seen \\Bogus)", b"UID STORE 1 FLAGS \\Bogus", b"STORE 1 -FLAGS.SILENT (\\Recentish)",
    b"APPEND INBOX (\\Bogus) {3+}\r\nabc", b"STORE 1 +FLAGS (\\*)",
])
async def test_unknown_system_flags_are_bad(listening: Listening, command: bytes) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a " + command)
    assert out[-1].startswith("a BAD invalid system flag"), out
    assert "MESSAGES 1 " in await messages_in(c, "INBOX")
    out = await send(c, "b", b"b FETCH 1 FLAGS")
    assert out[0] == "* 1 FETCH (FLAGS (\\Recent))\r\n", out
    ok = await send(c, "c", b"c STORE 1 +FLAGS (\\seen \\Recent $Junk)")
    assert ok[0] == "* 1 FETCH (FLAGS ($Junk \\Seen \\Recent))\r\n", ok


@pytest.mark.parametrize("command", [b"STORE 1 +FLAGS (k%s)", b"APPEND INBOX (k%s) {3+}\r\nabc",
                                     b"SEARCH KEYWORD k%s"])
async def test_keywords_over_200_characters_are_bad(listening: Listening, command: bytes) -> None:
    # each keyword of a mailbox is listed in FLAGS at every SELECT: a 60,000-character one went to every client
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a " + command % (b"x" * 200))
    assert out[-1].startswith("a BAD keyword longer than 200 characters"), out
    assert "MESSAGES 1 " in await messages_in(c, "INBOX")
    ok = await send(c, "b", b"b " + command % (b"x" * 199))  # 200 in all: allowed
    assert ok[-1].startswith("b OK"), ok


async def test_an_over_long_line_ends_idle_like_any_line_but_done(listening: Listening) -> None:
    c = await session(listening)
    c.writer.write(b"i IDLE\r\n")
    assert (await c.line()).startswith("+ ")
    c.writer.write(b"x" * 70000 + b"\r\n")
    assert await c.line() == "i BAD expected DONE\r\n"
    assert (await c.cmd("n NOOP"))[-1].startswith("n OK")


async def test_an_over_long_authenticate_response_ends_the_exchange(listening: Listening) -> None:
    c = await Line.open(listening.imap_port)
    await c.line()
    c.writer.write(b"a AUTHENTICATE PLAIN\r\n")
    assert (await c.line()).startswith("+")
    c.writer.write(b"x" * 70000 + b"\r\n")
    assert await c.line() == "a BAD malformed authentication response\r\n"
    assert (await c.cmd(f'b LOGIN {USER} "{PASSWORD}"'))[-1].startswith("b OK")


async def test_close_of_a_mailbox_another_session_deleted_deselects(listening: Listening) -> None:
    other = await session(listening, select=None)
    assert (await other.cmd("c CREATE Victim"))[-1].startswith("c OK")
    c = await session(listening, select="Victim")
    assert (await other.cmd("d DELETE Victim"))[-1].startswith("d OK")
    assert (await c.cmd("a CLOSE"))[-1] == "a OK CLOSE completed\r\n"
    assert (await c.cmd("b FETCH 1 FLAGS"))[-1] == "b BAD command not valid in this state\r\n"


# RFC 7888 §4: a non-synchronising literal far over the limit is not read (it was dropped byte by byte
# until the client stopped or the inactivity timeout, an hour of a connection for {99999999999+}): BAD
# [TOOBIG], BYE, and the connection closes at once
@pytest.mark.parametrize(("login", "command"), [
    (False, b"a LOGIN {99999999999+}"),
    (False, b"a LOGIN {20000+}"),  # before login literals stop at 8 KiB
    (True, b"a APPEND INBOX {99999999999+}"),
    (True, b"a SEARCH SUBJECT {99999999999999999999999999+}"),
    (True, b"a NOOP " + b"x" * 70000 + b" {99999999999+}"),  # an over-long line announcing one
], ids=["login", "login-over-16k", "append", "search-26-digits", "over-long-line"])
async def test_a_far_too_large_nonsync_literal_closes_the_connection(listening: Listening, login: bool,
                                                                     command: bytes) -> None:
    c = await session(listening, select=None) if login else await Line.open(listening.imap_port)
    if not login:
        await c.line()
    c.writer.write(command + b"\r\n" + b"x" * 1000)
    out = [await c.line(within=5) for _ in range(3)]
    assert out[0].startswith("a BAD") and ("[TOOBIG]" in out[0] or "too long" in out[0]), out
    assert out[1:] == ["* BYE literal too large; closing the connection\r\n", ""], out



async def test_appendlimit_is_advertised_once_logged_in(listening: Listening) -> None:
    c = await Line.open(listening.imap_port)
    assert "APPENDLIMIT" not in await c.line()  # the limit before login is 8 KiB for any literal
    limit = listening.world.settings.smtp.max_message_size
    out = await c.cmd(f'L LOGIN {USER} "{PASSWORD}"')
    assert f" APPENDLIMIT={limit}" in out[-1], out
    assert f" APPENDLIMIT={limit}" in (await c.cmd("c CAPABILITY"))[0]


def keywords(*numbers: int, prefix: str = "k") -> str:
    return "(" + " ".join(f"{prefix}{n}" for n in numbers) + ")"


async def distinct_keywords(listening: Listening, mailbox: str = "INBOX") -> set[str]:
    rows = await listening.world.pool.fetch(
        "SELECT DISTINCT f FROM mailbox_messages mm JOIN mailboxes b ON b.id = mm.mailbox_id, unnest(mm.flags) f"
        " WHERE b.name = $1 AND left(f, 1) <> '\\'", mailbox)
    return {r[0] for r in rows}


# Each keyword of a mailbox is listed in FLAGS and PERMANENTFLAGS at every SELECT: a client could store
# thousands and grow every SELECT of every client. A mailbox holds at most 100 distinct ones (Cyrus: 128).
async def test_store_of_keywords_beyond_the_mailbox_limit_is_no_limit(listening: Listening,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    for n in (1, 2):
        await listening.world.deliver(message(n))
    early = await session(listening)  # selected before any keyword: knows of none
    c = await session(listening)
    out = await send(c, "a", b"a STORE 1 +FLAGS " + keywords(*range(101)).encode())
    assert out[-1].startswith("a NO [LIMIT]"), out
    assert await distinct_keywords(listening) == set()
    assert (await send(c, "b", b"b STORE 1 +FLAGS.SILENT " + keywords(*range(100)).encode()))[-1].startswith("b OK")
    assert (await send(c, "c", b"c STORE 2 +FLAGS (k100)"))[-1].startswith("c NO [LIMIT]")
    assert (await send(c, "d", b"d STORE 2 FLAGS (k5 \\Seen)"))[-1].startswith("d OK")  # one it has
    assert (await send(early, "e", b"e STORE 2 +FLAGS (k7)"))[-1].startswith("e OK")
    assert (await send(early, "f", b"f UID STORE 2 +FLAGS (k100)"))[-1].startswith("f NO [LIMIT]")
    assert len(await distinct_keywords(listening)) == 100
    out = await send(c, "g", b"g SELECT INBOX")
    permanent = next(line for line in out if "PERMANENTFLAGS" in line)
    assert "\\*" not in permanent and " k99" in permanent, permanent  # RFC 3501 §7.1: no new keywords
    # the count is of keywords in use: once they are gone, new ones can be stored again
    assert (await send(c, "h", b"h STORE 1:* -FLAGS.SILENT " + keywords(*range(100)).encode()))[-1].startswith("h OK")
    assert (await send(early, "i", b"i STORE 1 +FLAGS (k100)"))[-1].startswith("i OK")
    no_errors_logged(caplog)


async def test_append_and_copy_of_keywords_beyond_the_mailbox_limit_store_nothing(
        listening: Listening, caplog: pytest.LogCaptureFixture) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    assert (await send(c, "a", b"a STORE 1 +FLAGS " + keywords(*range(100)).encode()))[-1].startswith("a OK")
    assert (await send(c, "b", b"b CREATE Other"))[-1].startswith("b OK")
    other = await session(listening, select=None)  # knows no keyword of INBOX
    raw = message(2)
    for tag, s in (("c", c), ("d", other)):
        out = await send(s, tag, b"%s APPEND INBOX (k100 \\Seen) {%d+}\r\n" % (tag.encode(), len(raw)) + raw)
        assert out[-1].startswith(f"{tag} NO [LIMIT]"), out
    assert "MESSAGES 1 " in await messages_in(c, "INBOX")
    assert (await send(other, "e", b"e APPEND INBOX (k3) {%d+}\r\n" % len(raw) + raw))[-1].startswith("e OK")
    out = await send(other, "f", b"f APPEND Other (x1 x2) {%d+}\r\n" % len(raw) + raw)
    assert out[-1].startswith("f OK"), out
    assert (await send(other, "g", b"g SELECT Other"))[-1].startswith("g OK")
    for tag, command in (("h", b"COPY"), ("i", b"MOVE"), ("j", b"UID MOVE")):
        out = await send(other, tag, b"%s %s 1 INBOX" % (tag.encode(), command))
        assert out[-1].startswith(f"{tag} NO [LIMIT]"), out
    assert "MESSAGES 2 " in await messages_in(c, "INBOX")
    assert "MESSAGES 1 " in await messages_in(c, "Other")
    assert (await send(c, "k", b"k COPY 2 Other"))[-1].startswith("k OK")  # k3 into a mailbox with room
    no_errors_logged(caplog)


async def test_sessions_adding_keywords_at_once_stay_within_the_limit(listening: Listening) -> None:
    await listening.world.deliver(message(1))
    sessions = [await session(listening) for _ in range(4)]
    outs = await asyncio.gather(*(
        send(s, "a", b"a STORE 1 +FLAGS.SILENT " + keywords(*range(40), prefix=f"s{i}-").encode())
        for i, s in enumerate(sessions)))
    assert sorted(out[-1][:12] for out in outs) == ["a NO [LIMIT]"] * 2 + ["a OK STORE c"] * 2, outs
    assert len(await distinct_keywords(listening)) == 80


# LIST patterns were a regex (`.*` for `*`, `[^/]*` for `%`) that backtracked for ever on runs of
# wildcards: `%*%*%*x` against a 120-character name took seconds, 30 pairs minutes, all on the event loop
@pytest.mark.parametrize("pattern", [b"%*%*%*x", b"*a*a*a*a*a*a*a*a*a*a*x", b"%a%a%a%a%a%a%a%a%a%a%a%ax",
                                     b"%*" * 3000 + b"x", b"a" * 600 + b"*"],
                         ids=["percent-star", "star-a", "percent-a", "6000-wildcards", "600-literals"])
async def test_list_patterns_with_many_wildcards_take_linear_time(listening: Listening, pattern: bytes) -> None:
    c = await session(listening, select=None)
    assert (await c.cmd("c CREATE " + "a" * 120))[-1].startswith("c OK")
    with no_hang():  # the regex: minutes for most of these patterns
        for command in (b'LIST "" "%s"', b'LSUB "" "%s"', b'LIST "" ("x" "%s") RETURN (STATUS (MESSAGES))'):
            out = await send(c, "a", b"a " + command % pattern)
            assert out == [f"a OK {command.split()[0].decode()} completed\r\n"], out


@pytest.mark.parametrize(("reference", "pattern", "names"), [
    ("", "*", ["INBOX", "INBOX/a", "Sent", "a", "a/b", "a/b/c", "ab"]),
    ("", "%", ["INBOX", "Sent", "a", "ab"]),
    ("", "a/%", ["a/b"]),
    ("", "a*", ["a", "a/b", "a/b/c", "ab"]),
    ("", "a%", ["a", "ab"]),
    ("a/", "%", ["a/b"]),
    ("a", "/*", ["a/b", "a/b/c"]),
    ("", "inbox*", ["INBOX", "INBOX/a"]),
    ("", "%/%", ["INBOX/a", "a/b"]),
    ("", "*%b", ["a/b", "ab"]),
    ("", "%*%/c", ["a/b/c"]),
    ("", "a/b/c/", []),
])
def test_list_patterns_match_as_rfc_3501_says(reference: str, pattern: str, names: list[str]) -> None:
    from imap.mailboxes import matcher

    every = ["INBOX", "INBOX/a", "Sent", "a", "a/b", "a/b/c", "ab"]
    m = matcher(reference, pattern)
    assert [n for n in every if m.match(n)] == names


# each key is a condition of one SQL statement whose planning grew faster than the count: 1,000 `1:*`
# (4 KB) held a database connection for minutes
@pytest.mark.parametrize(("keys", "reply"), [
    (b" ".join([b"1:*"] * 1000), "a NO [LIMIT] too many search keys"),
    (b" ".join([b"UID 1,3"] * 101), "a NO [LIMIT] too many search keys"),
    (b" ".join([b"NOT SEEN"] * 51), "a NO [LIMIT] too many search keys"),
    (b"(" + b" ".join([b"KEYWORD k%d" % i for i in range(101)]) + b")", "a NO [LIMIT] too many search keys"),
    (b" ".join([b"1:*"] * 50), "a OK"),
    (b" ".join([b"OR SEEN UNSEEN"] * 33), "a OK"),
], ids=["1000-seqsets", "101-uids", "51-nots", "101-in-parentheses", "50-seqsets", "33-ors"])
async def test_search_programs_with_many_keys_are_refused(listening: Listening, keys: bytes,
                                                                  reply: str) -> None:
    await listening.world.deliver(message(1))
    c = await session(listening)
    out = await send(c, "a", b"a SEARCH " + keys)
    assert out[-1].startswith(reply), out


async def test_create_and_rename_beyond_the_mailbox_limit_are_no_limit(listening: Listening,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from storage.mailstore import MAX_MAILBOXES

    pool = listening.world.pool
    have = await pool.fetchval("SELECT count(*) FROM mailboxes WHERE account_id = $1", listening.world.account_id)
    # nothing else bounded them: one CREATE of a 512-character name made 256 mailboxes
    await pool.execute("INSERT INTO mailboxes (account_id, name) SELECT $1, 'filler' || n"
                       " FROM generate_series(1, $2) n", listening.world.account_id, MAX_MAILBOXES - have - 3)
    c = await session(listening, select=None)
    out = await send(c, "a", b"a CREATE " + b"/".join([b"d"] * 4))  # four with its parents
    assert out[-1] == "a NO [LIMIT] too many mailboxes\r\n", out
    assert (await send(c, "b", b"b CREATE d/d"))[-1].startswith("b OK")
    assert (await send(c, "c", b"c RENAME d/d e/f/g"))[-1] == "c NO [LIMIT] too many mailboxes\r\n"  # e, e/f
    assert (await send(c, "d", b"d RENAME d/d d/e"))[-1].startswith("d OK")
    assert (await send(c, "e", b"e CREATE x"))[-1].startswith("e OK")  # the last one
    assert (await send(c, "f", b"f CREATE y"))[-1] == "f NO [LIMIT] too many mailboxes\r\n"
    assert (await send(c, "g", b"g DELETE x"))[-1].startswith("g OK")
    assert (await send(c, "h", b"h CREATE y"))[-1].startswith("h OK")
    assert await pool.fetchval("SELECT count(*) FROM mailboxes") == MAX_MAILBOXES
    no_errors_logged(caplog)
