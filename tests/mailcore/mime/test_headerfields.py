"""mailcore.mime.headerfields: HEADER.FIELDS picking, shared by delivery (sync_fields) and FETCH."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.mime import summarize
from mailcore.mime.headerfields import SYNC_FIELDS, pick, pick_parsed
from mailcore.mime.headers import parse_header

HEADER = (b"Return-Path: <a@b>\r\nFrom: A <a@b>\r\nX-Other: 1\r\nSubject: long\r\n folded\r\n"
          b"Received: x\r\n\tmore\r\nTo: c@d\r\n\r\n")


def test_picks_named_fields_with_folding_in_order() -> None:
    assert pick(HEADER, frozenset({"subject", "from"})) == (
        b"From: A <a@b>\r\nSubject: long\r\n folded\r\n\r\n")


def test_exclude_and_empty() -> None:
    assert pick(HEADER, frozenset({"return-path", "x-other", "received", "subject"}), exclude=True) == (
        b"From: A <a@b>\r\nTo: c@d\r\n\r\n")
    assert pick(HEADER, frozenset()) == b"\r\n"


def test_lone_cr_stays_in_its_line() -> None:
    # lines end at LF only, as SEARCH's header regex sees them: the text after a lone CR is still
    # part of the Subject field
    assert pick(b"Subject: a\rinvoice\r\nX: y\r\n\r\n", frozenset({"subject"})) == b"Subject: a\rinvoice\r\n\r\n"


def test_sync_fields_is_thunderbirds_list() -> None:
    assert {"from", "subject", "references", "content-type", "reply-to", "x-priority"} <= SYNC_FIELDS
    assert "received" not in SYNC_FIELDS


# summarize's sync_fields come from its one parse of the header (`pick_parsed`); they must be the bytes
# `pick` gives for the same header block, which FETCH and older rows use.
SYNC_CASES = {
    "plain": b"From: A <a@b>\r\nTo: c@d\r\nSubject: hi\r\nX-Other: 1\r\n\r\nbody\r\n",
    "folded": b"Subject: long\r\n folded\r\n\tand again\r\nReceived: x\r\n\tmore\r\nTo: c@d,\r\n e@f\r\n\r\nb",
    "duplicate fields": b"To: a@b\r\nX: 1\r\nto: c@d\r\nTO : e@f\r\nSubject: one\r\nSubject: two\r\n\r\n",
    "bare LF": b"From: a@b\nSubject: s\n folded\nX: y\n\nbody\n",
    "mixed line ends": b"From: a@b\r\nSubject: s\n folded\r\nDate: d\n\r\nbody",
    "lone CR in a line": b"Subject: a\rinvoice\r\nX: y\r\n\r\n",
    "no body": b"From: a@b\r\nSubject: s\r\n",
    "no body, no final line end": b"From: a@b\r\nSubject: s",
    "no final line end after folding": b"From: a@b\r\nSubject: s\r\n t",
    "only a blank line": b"\r\n",
    "empty message": b"",
    "8-bit": b"Subject: \xc3\xa9t\xc3\xa9 \xe9\r\nFrom: \xff <a@b>\r\nX-\xe9: 1\r\n\r\n\xff",
    "continuation first": b" lead\r\nFrom: a@b\r\n\r\n",
    "a line that is no field ends the block": b"From: a@b\r\nnot a field\r\nTo: c@d\r\n\r\n",
    "space before the colon": b"Subject : spaced\r\nFrom\t: tabbed\r\n\r\n",
    "empty values": b"Subject:\r\nTo: \r\n\r\n",
    "CR alone at the end": b"From: a@b\r\n\r",
    "every sync field": b"".join(f"{n}: v\r\n".encode() for n in sorted(SYNC_FIELDS)) + b"\r\n",
}


@pytest.mark.parametrize("raw", SYNC_CASES.values(), ids=SYNC_CASES.keys())
def test_summarize_sync_fields_are_picks(raw: bytes) -> None:
    s = summarize(raw)
    assert s.sync_fields == pick(s.header, SYNC_FIELDS)


def test_summarize_sync_fields_keep_folding_and_order() -> None:
    assert summarize(SYNC_CASES["duplicate fields"]).sync_fields == (
        b"To: a@b\r\nto: c@d\r\nTO : e@f\r\nSubject: one\r\nSubject: two\r\n\r\n")
    assert summarize(SYNC_CASES["folded"]).sync_fields == (
        b"Subject: long\r\n folded\r\n\tand again\r\nTo: c@d,\r\n e@f\r\n\r\n")


def test_pick_parsed_of_a_nested_header_uses_its_offsets() -> None:
    raw = b"X: 1\r\n\r\nFrom: a@b\r\nY: 2\r\nSubject: s\r\n\r\nbody"
    header = parse_header(raw, 8, len(raw))
    assert pick_parsed(raw, header, frozenset({"from", "subject"})) == pick(raw[8:header.body_start],
                                                                          frozenset({"from", "subject"}))


_header_pieces = st.sampled_from([
    b"From: a@b", b"to: c@d", b"Subject: s", b"X-Other: 1", b"Date: d", b"CC : e", b" folded", b"\tfolded",
    b"no field", b"", b"\r", b"\xe9", b":", b"Subject:", b"In-Reply-To: <x@y>",
])
_line_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b""])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_header_pieces, _line_ends), max_size=25))
def test_sync_fields_equal_pick_for_any_header(lines: list[tuple[bytes, bytes]]) -> None:
    raw = b"".join(text + end for text, end in lines)
    s = summarize(raw)
    assert s.sync_fields == pick(s.header, SYNC_FIELDS)
