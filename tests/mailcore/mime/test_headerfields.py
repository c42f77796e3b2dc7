"""storage.headerfields: HEADER.FIELDS picking, shared by delivery (sync_fields) and FETCH."""

from storage.headerfields import SYNC_FIELDS, pick

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
