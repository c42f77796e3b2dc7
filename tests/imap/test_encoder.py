from datetime import datetime, timedelta, timezone

import pytest

from imap import encoder as e


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("hello", b'"hello"'),
        ("", b'""'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ("line\r\nbreak", b"{11}\r\nline\r\nbreak"),
        ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
        (b"\xff", b"{1}\r\n\xff"),
        ("x" * 1001, b"{1001}\r\n" + b"x" * 1001),
    ],
)
def test_string(value: str | bytes, wire: bytes) -> None:
    assert e.string(value) == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, b"NIL"),
        (5, b"5"),
        (e.NIL, b"NIL"),
        (e.Atom("\\Seen"), b"\\Seen"),
        (["a", None, 3, [e.Atom("X")]], b'("a" NIL 3 (X))'),
        ([], b"()"),
        (e.Literal(b"ab"), b"{2}\r\nab"),
        (e.Literal(b"a\x00", binary=True), b"~{2}\r\na\x00"),
    ],
)
def test_encode(value: e.Value, wire: bytes) -> None:
    assert e.encode(value) == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [("INBOX", b"INBOX"), ("a b", b'"a b"'), ("x]", b"x]"), ("a%", b'"a%"'), ("", b'""'), ("{1}", b'"{1}"')],
)
def test_astring(value: str, wire: bytes) -> None:
    assert e.astring(value) == wire


@pytest.mark.parametrize(
    ("line", "wire"),
    [
        (e.ok("A1", "LOGIN completed"), b"A1 OK LOGIN completed\r\n"),
        (e.no("A2", "no such mailbox", e.TRYCREATE), b"A2 NO [TRYCREATE] no such mailbox\r\n"),
        (e.bad("*", "junk"), b"* BAD junk\r\n"),
        (e.ok("A3", "done", e.Code.appenduid(38505, [3955])), b"A3 OK [APPENDUID 38505 3955] done\r\n"),
        (e.ok("A4", "done", e.Code.copyuid(38505, [304, 319, 320, 321], [3956, 3957, 3958, 3959])),
         b"A4 OK [COPYUID 38505 304,319:321 3956:3959] done\r\n"),
        (e.ok("*", "Predicted next UID", e.Code.uidnext(4392)), b"* OK [UIDNEXT 4392] Predicted next UID\r\n"),
        (e.ok("*", "Limited", e.Code.permanentflags(["\\Deleted", "\\Seen", "\\*"])),
         b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
        (e.no("A5", "try later", e.UNAVAILABLE), b"A5 NO [UNAVAILABLE] try later\r\n"),
        (e.no("A6", "cannot", e.CANNOT), b"A6 NO [CANNOT] cannot\r\n"),
        (e.ok("*", "hi", e.ALERT), b"* OK [ALERT] hi\r\n"),
        (e.no("A7", "too big", "TOOBIG"), b"A7 NO [TOOBIG] too big\r\n"),
        (e.ok("A8", "evil\r\ntext"), b"A8 OK evil  text\r\n"),
        (e.bye("Logging out"), b"* BYE Logging out\r\n"),
        (e.continuation(), b"+ Ready\r\n"),
        (e.exists(23), b"* 23 EXISTS\r\n"),
        (e.expunge(3), b"* 3 EXPUNGE\r\n"),
        (e.flags(["\\Answered", "\\Seen"]), b"* FLAGS (\\Answered \\Seen)\r\n"),
        (e.untagged(e.Atom("SEARCH"), 2, 84, 882), b"* SEARCH 2 84 882\r\n"),
        (e.list_response(["\\HasNoChildren"], "/", "INBOX"), b'* LIST (\\HasNoChildren) "/" INBOX\r\n'),
        (e.list_response([], "/", "台北"), b'* LIST () "/" &U,BTFw-\r\n'),
        (e.list_response(["\\Noselect"], None, "a b", kind="LSUB"), b'* LSUB (\\Noselect) NIL "a b"\r\n'),
        (e.list_response([], "/", "Sent", extended=["CHILDINFO", ["SUBSCRIBED"]]),
         b'* LIST () "/" Sent ("CHILDINFO" ("SUBSCRIBED"))\r\n'),
    ],
)
def test_lines(line: bytes, wire: bytes) -> None:
    assert line == wire


def test_date_time() -> None:
    when = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert e.date_time(when) == b'"17-Jul-1996 02:44:25 -0700"'
    assert e.date_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))) == (
        b'"02-Jan-2024 03:04:05 +0530"')


def test_fetch_keeps_big_bodies_uncopied() -> None:
    body = memoryview(b"x" * 100_000)
    chunks = e.fetch(12, [("UID", 7), ("FLAGS", e.Atom("(\\Seen)")), ("BODY[]", e.Literal(body)),
                          ("ENVELOPE", e.Atom('(NIL "s")'))])
    assert any(c is body for c in chunks)
    assert len(chunks) == 3
    wire = b"".join(bytes(c) for c in chunks)
    assert wire == b"* 12 FETCH (UID 7 FLAGS (\\Seen) BODY[] {100000}\r\n" + b"x" * 100_000 + b' ENVELOPE (NIL "s"))\r\n'


def test_fetch_small() -> None:
    assert e.fetch(1, [("RFC822.SIZE", 44827), ("BODY[HEADER]", e.Literal(b"a\r\n"))]) == [
        b"* 1 FETCH (RFC822.SIZE 44827 BODY[HEADER] {3}\r\na\r\n)\r\n"]
