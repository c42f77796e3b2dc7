"""mailcore/headers.py: header-injection safety and a byte-exact header block split."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcore.headers import field_values, safe_header_value, split_header_block


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


def _values_by_split(raw: bytes, name: str) -> list[str]:
    return [f.value for f in split_header_block(raw)[0] if f.name.lower() == name]


FIELD_VALUE_CASES = {
    "one": b"From: a@example.test\r\nTo: b@example.test\r\n\r\nFrom: in the body\r\n",
    "folded, then another": b"FROM: a@example.test,\r\n\tc@example.test\r\nX: 1\r\nfrom :b@example.test\n\nbody",
    "none": b"To: b@example.test\r\n\r\n",
    "empty message": b"",
    "starts with the empty line": b"\r\nFrom: a@example.test\r\n",
    "bare LF empty line first": b"\nFrom: a@example.test\r\n",
    "no empty line, no final line end": b"X: 1\r\nFrom: a@example.test",
    "first line indented": b" From: a@example.test\r\n\r\n",
    "indented later: a continuation": b"X: 1\r\n From: a@example.test\r\n\r\n",
    "other whitespace before the name": b"X: 1\r\n\x0b From\t: a@example.test\r\n\r\n",
    "continuation of spaces only": b"From: a@example.test\r\n \r\n\r\n",
    "continuation ends the message": b"From: a@example.test\r\n\t",
    "a line that is no field": b"From: a@example.test\r\nnot a field\r\nFrom: b@example.test\r\n\r\n",
    "name only a prefix": b"From-X: a@example.test\r\nFromage: b\r\nX-From: c\r\n\r\n",
    "8-bit": b"From: \xc3\xa9 \xff <a@example.test>\r\nFr\xc3\xb6m: x\r\n\r\n",
    "lone CR": b"From: a\r@example.test\r\n\rFrom: b@example.test\r\n\r\n",
}


@pytest.mark.parametrize("raw", FIELD_VALUE_CASES.values(), ids=FIELD_VALUE_CASES.keys())
def test_field_values_as_split_header_block_gives_them(raw: bytes) -> None:
    assert field_values(raw, "from") == _values_by_split(raw, "from")


def test_field_values_unfolds_and_keeps_order() -> None:
    assert field_values(FIELD_VALUE_CASES["folded, then another"], "From") == [
        "a@example.test,\tc@example.test", "b@example.test"]


_lines = st.lists(st.tuples(
    st.sampled_from([b"From: a@b", b"from :c", b" From: d", b"\tx", b"To: e", b"no field", b"", b"\r",
                     b"\x0bfrom: f", b"From-X: g", b"FROM:", b"\xe9"]),
    st.sampled_from([b"\r\n", b"\n", b"\r", b""])), max_size=20)


@given(_lines)
def test_field_values_agree_with_split_for_any_header(lines: list[tuple[bytes, bytes]]) -> None:
    raw = b"".join(text + end for text, end in lines)
    assert field_values(raw, "from") == _values_by_split(raw, "from")


@given(st.binary(max_size=300))
def test_field_values_agree_with_split_for_any_bytes(raw: bytes) -> None:
    assert field_values(raw, "from") == _values_by_split(raw, "from")


@given(st.text())
def test_safe_header_value_replaces_exactly_the_control_runs(text: str) -> None:
    assert safe_header_value(text) == re.sub(r"[\x00-\x08\x0a-\x1f\x7f]+", " ", text)
