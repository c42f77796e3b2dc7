"""Framing: literals split across feeds, limits that keep sync, AUTHENTICATE and IDLE modes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imap.commands import (
    Append,
    AuthResponse,
    BadCommand,
    Command,
    ContinuationNeeded,
    Hangup,
    IdleDone,
    Login,
    Simple,
)
from imap.parser import CommandParser

STREAM = (
    b"A1 LOGIN {4}\r\nfred {6}\r\nsecret\r\n"
    b'A2 APPEND "Sent" (\\Seen) {12+}\r\nHello\r\nWorld\r\n'
    b"A3 NOOP\r\n"
)


def run(parser: CommandParser, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_whole_stream() -> None:
    events = run(CommandParser(), [STREAM])
    assert events[0] == ContinuationNeeded(4)
    assert events[1] == ContinuationNeeded(6)
    assert events[2] == Login(tag="A1", name="LOGIN", username="fred", password="secret")
    assert isinstance(events[3], Append) and events[3].messages[0].message == b"Hello\r\nWorld"
    assert events[4] == Simple(tag="A3", name="NOOP")


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut: int) -> None:
    whole = run(CommandParser(), [STREAM])
    assert run(CommandParser(), [STREAM[:cut], STREAM[cut:]]) == whole


def test_byte_by_byte() -> None:
    whole = run(CommandParser(), [STREAM])
    assert run(CommandParser(), [bytes([b]) for b in STREAM]) == whole


def test_continuation_comes_before_literal_bytes() -> None:
    p = CommandParser()
    assert p.feed(b"A1 LOGIN {4}\r\n") == [ContinuationNeeded(4)]
    assert p.feed(b"fr") == []
    assert p.feed(b"ed x\r\n") == [Login(tag="A1", name="LOGIN", username="fred", password="x")]


def test_literal_containing_crlf_and_braces() -> None:
    p = CommandParser()
    events = p.feed(b"A1 LOGIN {8+}\r\n{3}\r\nabc pw\r\nA2 NOOP\r\n")
    assert events[0] == Login(tag="A1", name="LOGIN", username="{3}\r\nabc", password="pw")
    assert events[1].name == "NOOP"


def test_sync_literal_too_big_gets_bad_without_continuation() -> None:
    p = CommandParser(max_literal=10)
    events = p.feed(b"A1 LOGIN {100}\r\nA2 NOOP\r\n")
    assert events == [BadCommand("A1", "literal too large (limit 10 octets)", "TOOBIG"), Simple(tag="A2", name="NOOP")]


def test_nonsync_literal_too_big_is_skipped() -> None:
    p = CommandParser(max_literal=10)
    body = b"x" * 20  # up to twice the limit: read and dropped, the session goes on
    events = p.feed(b"A1 LOGIN {20+}\r\n" + body[:5])
    assert [type(e) for e in events] == [BadCommand]
    events = p.feed(body[5:] + b" {3+}\r\nabc\r\nA2 NOOP\r\n")
    assert events == [Simple(tag="A2", name="NOOP")]


# RFC 7888 §4: a non-synchronising literal the server will not read gets BAD, then the connection closes
@pytest.mark.parametrize("data", [
    b"A1 LOGIN {21+}\r\n",
    b"A1 LOGIN {99999999999999999999999+}\r\n",
    b"A1 APPEND INBOX {1+}\r\nx {99999999+}\r\n",
    b"A1 NOOP " + b"x" * 100 + b" {21+}\r\n",  # an over-long line (dropped) announcing one
    b"A1 NOOP " + b"x" * 100 + b" {5+}\r\nxxxxx {21+}\r\n",  # the same, in a later line of the dropped command
])
def test_nonsync_literal_far_too_big_hangs_up(data: bytes) -> None:
    p = CommandParser(max_literal=10, max_line=50)
    events = p.feed(data + b"x" * 30 + b"\r\nA2 NOOP\r\n")
    assert isinstance(events[0], BadCommand) and events[0].tag == "A1", events
    assert events[1:] == [Hangup("literal too large; closing the connection")], events
    assert p.feed(b"A3 NOOP\r\n") == [] and p.resume() == []


def test_append_limit_separate_from_literal_limit() -> None:
    p = CommandParser(max_literal=5, max_append_literal=1000)
    events = p.feed(b"A1 APPEND INBOX {100+}\r\n" + b"x" * 100 + b"\r\n")
    assert isinstance(events[0], Append)
    p.max_append_literal = 50  # e.g. changed by the session
    events = p.feed(b"A2 APPEND INBOX {100}\r\n")
    assert events[0].code == "TOOBIG"


def test_literal_limit_can_be_overridden() -> None:
    class PreAuth(CommandParser):
        def literal_limit(self, command: str | None) -> int:
            return 0 if command != "LOGIN" else 100

    p = PreAuth()
    assert p.feed(b"A1 APPEND INBOX {1}\r\n")[0].code == "TOOBIG"
    assert p.feed(b"A2 LOGIN {1}\r\n") == [ContinuationNeeded(1)]


def test_max_command_bounds_multiappend() -> None:
    p = CommandParser(max_literal=100, max_command=150)
    events = p.feed(b"A1 APPEND INBOX {90+}\r\n" + b"x" * 90 + b" {90+}\r\n" + b"y" * 90 + b"\r\nA2 NOOP\r\n")
    assert events[0].code == "TOOBIG" and events[1].name == "NOOP"


def test_long_line_is_bad_and_stream_recovers() -> None:
    p = CommandParser(max_line=50)
    events = p.feed(b"A1 NOOP " + b"x" * 100)
    assert events == [BadCommand("A1", "line too long")]
    assert p.buffered == 0  # not kept in memory
    assert p.feed(b"yyy" * 100) == []
    assert p.feed(b"zzz\r\nA2 NOOP\r\n") == [Simple(tag="A2", name="NOOP")]


def test_long_line_in_one_feed() -> None:
    p = CommandParser(max_line=50)
    events = p.feed(b"A1 NOOP " + b"x" * 100 + b"\r\nA2 NOOP\r\n")
    assert events == [BadCommand("A1", "line too long"), Simple(tag="A2", name="NOOP")]


def test_blank_lines_ignored_and_bare_lf_accepted() -> None:
    assert CommandParser().feed(b"\r\n\r\nA1 NOOP\n") == [Simple(tag="A1", name="NOOP")]


def test_idle_mode() -> None:
    p = CommandParser()
    events = p.feed(b"A1 IDLE\r\nDONE\r\nA2 NOOP\r\n")
    assert events == [Simple(tag="A1", name="IDLE")]  # paused until the session decides
    assert p.enter_idle() == [IdleDone(True), Simple(tag="A2", name="NOOP")]
    p.feed(b"A3 IDLE\r\n")
    assert p.enter_idle() == []
    assert p.feed(b"done\r\n") == [IdleDone(True)]
    p.feed(b"A4 IDLE\r\n")
    p.enter_idle()
    assert p.feed(b"A5 NOOP\r\n") == [IdleDone(False)]


def test_idle_rejected_resumes_commands() -> None:
    p = CommandParser()
    p.feed(b"A1 IDLE\r\nA2 NOOP\r\n")
    assert p.resume() == [Simple(tag="A2", name="NOOP")]


def test_authenticate_exchange() -> None:
    p = CommandParser()
    assert [e.name for e in p.feed(b"A1 AUTHENTICATE PLAIN\r\n")] == ["AUTHENTICATE"]
    assert p.enter_auth() == []
    assert p.feed(b"AGZyZWQAc2VjcmV0\r\n") == [AuthResponse(b"AGZyZWQAc2VjcmV0")]
    assert p.feed(b"A2 NOOP\r\n") == []  # still paused: the session answers first
    assert p.resume() == [Simple(tag="A2", name="NOOP")]
    p.feed(b"A3 AUTHENTICATE PLAIN\r\n")
    p.enter_auth()
    event = p.feed(b"*\r\n")[0]
    assert isinstance(event, AuthResponse) and event.cancelled


def test_mixed_case_thunderbird_commands() -> None:
    events = CommandParser().feed(b"5 uid store 3 +Flags (\\Seen)\r\n6 UID fetch 1:* (FLAGS)\r\n")
    assert [(e.name, e.uid) for e in events] == [("STORE", True), ("FETCH", True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_any_bytes_yield_events_never_exceptions(chunks: list[bytes]) -> None:
    p = CommandParser(max_line=64, max_literal=32)
    for chunk in chunks:
        for event in p.feed(chunk):
            assert isinstance(event, Command | BadCommand | ContinuationNeeded | AuthResponse | IdleDone)
        if p.paused:
            p.resume()


_tokens = st.sampled_from([
    b"A1 ", b"UID ", b"FETCH ", b"SEARCH ", b"LOGIN ", b"APPEND ", b"STORE ", b"LIST ", b"(", b")", b"[",
    b"]", b"{3}\r\n", b"{2+}\r\n", b"~{1+}\r\n", b'"', b"\\", b" ", b"\r\n", b"1:*", b"BODY", b"INBOX",
    b"OR ", b"NOT ", b"HEADER.FIELDS ", b"<0.5>", b"*", b"&", b"\xff", b"\x00", b"+FLAGS ", b"abc",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(_tokens, max_size=30))
def test_grammar_like_input_never_raises(tokens: list[bytes]) -> None:
    p = CommandParser(max_line=200, max_literal=16)
    for event in p.feed(b"".join(tokens) + b"\r\n"):
        assert isinstance(event, Command | BadCommand | ContinuationNeeded | AuthResponse | IdleDone)
