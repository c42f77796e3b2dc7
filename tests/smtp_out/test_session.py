"""The pieces of an outbound session that need no server (smtp_out/session.py): reply lines, command lines,
the message as sent after DATA."""

from __future__ import annotations

import pytest

from mailcore.lineends import normalize_crlf
from smtp_out.session import command, dot_stuffed, parse_reply_line


@pytest.mark.parametrize(("line", "parsed"), [
    (b"250 2.0.0 OK\r\n", (250, False, "2.0.0 OK")),
    (b"250-mx.example greets you\r\n", (250, True, "mx.example greets you")),
    (b"354\r\n", (354, False, "")),            # RFC 5321 §4.2: the text is optional
    (b"421 4.4.2 bye\n", (421, False, "4.4.2 bye")),  # a bare LF from a sloppy server
    (b"550 5.1.1 caf\xc3\xa9\r\n", (550, False, "5.1.1 caf\u00e9")),
])
def test_reply_lines(line: bytes, parsed: tuple[int, bool, str]) -> None:
    assert parse_reply_line(line) == parsed


@pytest.mark.parametrize("line", [b"", b"25\r\n", b"abc def\r\n", b"650 no\r\n", b"250x\r\n", b"\r\n"])
def test_malformed_reply_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_reply_line(line)


def test_command_lines_refuse_control_characters() -> None:
    assert command(b"MAIL", b"FROM:<a@b.example>", b"BODY=8BITMIME") == b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n"
    for bad in (b"TO:<a@b.example>\r\nRSET", b"TO:<a\n@b>", b"TO:<a\x00@b>"):
        with pytest.raises(ValueError):
            command(b"RCPT", bad)


@pytest.mark.parametrize(("message", "sent"), [
    (b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n"),
    (b"Subject: x\r\n\r\nno newline", b"Subject: x\r\n\r\nno newline\r\n.\r\n"),
    (b"Subject: x\n\n.leading\n..two\r.\r\n", b"Subject: x\r\n\r\n..leading\r\n...two\r\n..\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b"", b"\r\n.\r\n"),
    (b".\r\n.\r\n", b"..\r\n..\r\n.\r\n"),  # consecutive dot lines are each stuffed
    # A '.' line behind a bare LF or CR is a line of its own once sent, so it is stuffed: it can
    # neither end DATA early nor be read as an end by a lenient server (SMTP smuggling).
    (b"a\n.\r\nMAIL FROM:<x@evil.example>\r\n", b"a\r\n..\r\nMAIL FROM:<x@evil.example>\r\n.\r\n"),
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
])
def test_dot_stuffing_and_line_endings(message: bytes, sent: bytes) -> None:
    assert dot_stuffed(message) == sent


def test_dot_stuffing_sends_the_line_endings_the_signer_signs() -> None:
    """Whatever the message's line ends, the bytes sent (unstuffed) are `normalize_crlf`'s, the bytes
    `mailcore.auth.dkim.sign_message` signs."""
    message = b"Subject: a\r b\nTo: c\r\n\r\n.dot\rbody\n\r\r\nend\r"
    sent = dot_stuffed(message)
    assert sent.removesuffix(b".\r\n").replace(b"\r\n..", b"\r\n.").removeprefix(b".") == normalize_crlf(message)
