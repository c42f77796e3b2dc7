"""mailcore/lineends.py: the one rule for line endings of what we sign and send.

Expectations come from RFC 5322 §2.3 (CR and LF only ever together, as CRLF) and RFC 6376 §5.3 (before
signing, "bare CR or LF characters ... MUST be converted to the SMTP-standard CRLF sequence"): each bare
CR and each bare LF is one line ending, a CRLF is one line ending, and nothing else changes."""

from __future__ import annotations

import pytest

from mailcore.lineends import normalize_crlf


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param(b"", b"", id="empty"),
    pytest.param(b"no line ending", b"no line ending", id="no line ending: none added"),
    pytest.param(b"a\r\nb\r\n", b"a\r\nb\r\n", id="CRLF kept"),
    pytest.param(b"a\rb\r\n", b"a\r\nb\r\n", id="bare CR"),
    pytest.param(b"a\nb\n", b"a\r\nb\r\n", id="bare LF"),
    pytest.param(b"a\r\nb\rc\nd\r\n", b"a\r\nb\r\nc\r\nd\r\n", id="mixed"),
    pytest.param(b"body\r", b"body\r\n", id="CR at end"),
    pytest.param(b"\nFrom: a\r\n", b"\r\nFrom: a\r\n", id="LF at start"),
    pytest.param(b"a\r\r\nb", b"a\r\n\r\nb", id="CR CR LF: a bare CR, then a CRLF"),
    pytest.param(b"a\n\rb", b"a\r\n\r\nb", id="LF CR: two bare ends, not one reversed CRLF"),
    pytest.param(b"\r\n\r\n", b"\r\n\r\n", id="empty lines kept"),
    pytest.param(b"\r\r\n\n", b"\r\n\r\n\r\n", id="three line ends around one CRLF"),
    pytest.param(b"Subject: a\r b\r\n", b"Subject: a\r\n b\r\n", id="CR before a space: a fold"),
    pytest.param(b"8bit \xc3\xa9\r\x00\n", b"8bit \xc3\xa9\r\n\x00\r\n", id="other bytes untouched"),
])
def test_line_endings(given: bytes, expected: bytes) -> None:
    assert normalize_crlf(given) == expected
    assert normalize_crlf(expected) == expected  # what it gives is left as it is


def test_crlf_only_message_is_passed_through_uncopied() -> None:
    """Almost all mail is CRLF-only already (smtp_in refuses anything else): it is scanned, not copied."""
    message = b"From: a@ours.example\r\nSubject: s\r\n\r\n" + b"a line of the body\r\n" * 50_000
    assert normalize_crlf(message) is message
