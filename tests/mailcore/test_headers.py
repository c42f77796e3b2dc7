"""mailcore/headers.py: header-injection safety and a byte-exact header block split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcore.headers import safe_header_value, split_header_block


def test_safe_header_value() -> None:
    assert safe_header_value("plain value") == "plain value"
    assert safe_header_value("a\r\nBcc: victim@example.test") == "a Bcc: victim@example.test"
    assert safe_header_value("a\nb\rc\0d\x1b\x7fe") == "a b c d e"
    assert safe_header_value("keeps\ttabs") == "keeps\ttabs"
    assert safe_header_value("café ✓") == "café ✓"


@given(st.text())
def test_safe_header_value_never_lets_a_line_break_through(text: str) -> None:
    out = safe_header_value(text)
    assert "\r" not in out and "\n" not in out and "\0" not in out


def test_split_header_block_is_exact() -> None:
    raw = (b"From: a@example.test\r\nSubject: one\r\n two\r\nX: y\r\n\r\nbody\r\nNot: a header\r\n")
    fields, rest = split_header_block(raw)
    assert [f.name for f in fields] == ["From", "Subject", "X"]
    assert fields[1].value == "one two"
    assert rest == b"\r\nbody\r\nNot: a header\r\n"
    assert b"".join(f.raw for f in fields) + rest == raw
    assert split_header_block(b"From: x\n\nhi\n")[1] == b"\nhi\n"


@given(st.binary())
def test_split_header_block_round_trips(raw: bytes) -> None:
    fields, rest = split_header_block(raw)
    assert b"".join(f.raw for f in fields) + rest == raw
