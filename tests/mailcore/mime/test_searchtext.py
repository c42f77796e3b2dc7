"""searchtext: a message's searchable text is its decoded, folded text parts; a needle's terms are necessary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.mime import summarize
from mailcore.mime.searchtext import (
    MAX_WORD,
    MIN_WORD,
    WORD,
    codes_literal,
    decode_charset,
    decode_transfer,
    fold,
    index_words,
    message_text,
    needle_terms,
    word_code,
)

MULTIPART = (
    b"From: b@example.org\r\nContent-Type: multipart/mixed; boundary=XY\r\n\r\npreamble words\r\n"
    b"--XY\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"see the ZEPHYR=E9quill soft=\r\nbreak\r\n"
    b"--XY\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgoAAAANSUhEUgAAWmVwaHlycXVpbGw=\r\n"
    b"--XY\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"PHA+U3RyYcOfZTwvcD4=\r\n"
    b"--XY\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner subject\r\n\r\ninner body text\r\n"
    b"--XY--\r\nepilogue words\r\n")


def text_of(raw: bytes, limit: int = 10_000) -> str:
    s = summarize(raw)
    return message_text(raw, s.parts, s.body_offset, limit).text


@pytest.mark.parametrize("needle,found", [
    ("zephyréquill", True),  # quoted-printable and ISO-8859-1 undone
    ("ZEPHYRÉQUILL", True),  # case folded beyond ASCII
    ("softbreak", True),  # a soft line break joins
    ("soft=", False),
    ("<p>strasse</p>", True),  # base64 and UTF-8 undone; ß folds to ss
    ("STRAßE", True),  # and so is the needle
    ("inner subject", True),  # an encapsulated message's header is text
    ("inner body text", True),
    ("iVBORw0KGgo", False),  # a binary attachment's base64 is not text
    ("zephyrquill", False),  # nor what it decodes to
    ("preamble", False),  # nor the MIME preamble and epilogue
    ("epilogue", False),
    ("content-type", False),  # nor part headers
])
def test_text_parts_decoded(needle: str, found: bool) -> None:
    assert (fold(needle) in text_of(MULTIPART)) is found


@pytest.mark.parametrize("raw,text", [
    (b"Subject: x\r\n\r\nPlain Body\r\n", "plain body\r\n"),  # no Content-Type: text/plain
    (b"Subject: x\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n", ""),
    (b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8g\r\nV29ybGQ=\r\n", "hello world"),
    (b"Subject: x\r\nContent-Type: text/plain; charset=x-nonsense\r\n\r\ncaf\xc3\xa9\r\n", "caf\u00e9\r\n"),
    (b"Subject: x\r\nContent-Type: text/plain\r\n\r\ncaf\xe9 NUL\x00!\r\n", "caf\u00e9 nul!\r\n"),
    (b"Subject: x\r\nContent-Type: text/plain; charset=zlib\r\n\r\nabc\r\n", "abc\r\n"),  # not a text codec
])
def test_single_part_texts(raw: bytes, text: str) -> None:
    assert text_of(raw) == text


@pytest.mark.parametrize("data,encoding,out", [
    (b"a=3Db=\r\nc", "quoted-printable", b"a=bc"),
    (b"YWJj", "base64", b"abc"),
    (b"YW\r\nJj\r\n", "base64", b"abc"),
    (b"YWJ", "base64", b"ab"),  # padding missing
    (b"YWJjZ", "base64", b"abc"),  # a stray last character
    (b"Y!W*Jj==trailing", "base64", b"abc"),  # noise and data after the padding
    (b"\xff\xfe", "8bit", b"\xff\xfe"),
    (b"x", "x-uuencode", b"x"),
])
def test_transfer_decoding(data: bytes, encoding: str, out: bytes) -> None:
    assert decode_transfer(data, encoding) == out


@pytest.mark.parametrize("data,charset,out", [
    ("é".encode("latin-1"), "ISO-8859-1", "é"),
    ("é".encode(), None, "é"),
    ("é".encode("cp1252"), "us-ascii", "é"),  # mislabelled 8-bit: guessed, not replaced
    ("€".encode("cp1252"), None, "€"),
    ("д".encode("koi8-r"), '"KOI8-R"', "д"),
    (b"+AGEAYgBj-", "utf-7", "abc"),
])
def test_charsets(data: bytes, charset: str | None, out: str) -> None:
    assert decode_charset(data, charset) == out


ALTERNATIVE = (
    b"Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\nContent-Type: multipart/alternative; boundary=A\r\n"
    b"\r\n--A\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--A\r\nContent-Type: text/html\r\n\r\n"
    b"<p>html words</p>\r\n--A--\r\n--M\r\nContent-Type: text/html\r\n\r\n<p>second html</p>\r\n"
    b"--M\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=page.html\r\n\r\n"
    b"<p>attached page</p>\r\n--M--\r\n")


@pytest.mark.parametrize("raw,text", [
    (ALTERNATIVE, "plain words\n<p>second html</p>\n<p>attached page</p>"),  # in multipart/alternative only
    (b"Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nx\r\n"
     b"--A\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--A--\r\n", "x"),
    (b"Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/html\r\n\r\n<b>x</b>"
     b"\r\n--A\r\nContent-Type: text/plain\r\n\r\nx\r\n--A--\r\n", "<b>x</b>\nx"),
])
def test_html_twin_of_a_plain_alternative_is_left_out(raw: bytes, text: str) -> None:
    assert text_of(raw) == text


def test_limit_cuts_and_marks_incomplete() -> None:
    raw = b"Subject: x\r\n\r\n" + b"word " * 100
    s = summarize(raw)
    cut = message_text(raw, s.parts, s.body_offset, 12)
    assert cut.text == "word word wo" and not cut.complete
    whole = message_text(raw, s.parts, s.body_offset, 10_000)
    assert whole.complete and whole.words == {b"word"}


@pytest.mark.parametrize("needle,terms", [
    ("zephyrquill", [("within", "zephyrquill")]),
    ("quill no", [("suffix", "quill"), ("prefix", "no")]),
    ("keep the zephyr", [("suffix", "keep"), ("word", "the"), ("prefix", "zephyr")]),
    (" the ", [("word", "the")]),
    ("a_b-c", [("suffix", "a_b"), ("prefix", "c")]),
    ("", []),
    ("-%-", []),
])
def test_needle_terms(needle: str, terms: list[tuple[str, str]]) -> None:
    assert [(t.kind, t.token) for t in needle_terms(needle)] == terms


_TEXT = st.text(st.sampled_from("ab ß-_é\n\x00ÉSσΣ"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_TEXT, _TEXT, _TEXT)
def test_terms_hold_for_every_text_containing_the_needle(before: str, needle: str, after: str) -> None:
    """What the index relies on: if a text contains the needle, it has an indexed word satisfying every
    term long enough to narrow a search (shorter words are not indexed)."""
    text, n = fold(before + needle + after), fold(needle)
    if n not in text:  # folding may join across the seams; the property is about containment
        return
    found = index_words(text)
    words = {w.decode() for w in found or ()}
    for term in needle_terms(n):
        if len(term.token) < MIN_WORD or found is None:
            continue
        match = {"word": lambda w, t=term.token: w == t, "prefix": lambda w, t=term.token: w.startswith(t),
                 "suffix": lambda w, t=term.token: w.endswith(t), "within": lambda w, t=term.token: t in w}
        assert any(match[term.kind](w) for w in words), (text, n, term)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_ascii_split_agrees_with_the_regex(text: str) -> None:
    found = index_words(text)
    expected = frozenset(WORD.findall(text))
    assert found == (None if any(len(w) > MAX_WORD for w in expected) else
                     {w.encode() for w in expected if len(w) >= MIN_WORD})


@pytest.mark.parametrize("text,words", [
    ("a to the quill", {b"the", b"quill"}),  # one and two letters: no term that narrows is that short
    ("x_y ab_ 12 123", {b"x_y", b"ab_", b"123"}),
    ("é éé ééé straße", {"ééé".encode(), "straße".encode()}),  # characters, not bytes, count
    ("", set()),
    ("ok " + "w" * (MAX_WORD + 1), None),
])
def test_index_words(text: str, words: set[bytes] | None) -> None:
    assert index_words(text) == words


def test_codes_literal_is_the_codes_of_the_words() -> None:
    words = frozenset({b"quill", "straße".encode(), b"zephyr"})
    literal = codes_literal(words)
    assert literal.startswith("{") and literal.endswith("}")
    assert sorted(int(c) for c in literal[1:-1].split(",")) == sorted(word_code(w.decode()) for w in words)
    assert codes_literal(words) == literal  # again, from the memo
    assert codes_literal(frozenset()) == "{}"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_a_text(raw: bytes) -> None:
    s = summarize(raw)
    t = message_text(raw, s.parts, s.body_offset, 100)
    assert "\0" not in t.text and len(t.text) <= 100
    t.text.encode("utf-8")  # storable in PostgreSQL
