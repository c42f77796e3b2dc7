import pytest
from hypothesis import given
from hypothesis import strategies as st

from imap import utf7

# RFC 3501 §5.1.3 examples, plus RFC 2152-derived ones
CASES = [
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("INBOX", "INBOX"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("&", "&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Корзина", "&BBoEPgRABDcEOAQ9BDA-"),
    ("😀", "&2D3eAA-"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "wire"), CASES)
def test_examples(text: str, wire: str) -> None:
    assert utf7.encode(text) == wire
    assert utf7.decode(wire) == text
    assert utf7.decode(wire.encode()) == text


@pytest.mark.parametrize(
    "bad",
    [
        "&Jjo!",  # RFC 3501: "&Jjo!" is not valid
        "&U,BTFw-&ZeVnLIqe-",  # RFC 3501: two adjacent runs must be one
        "&AGE-",  # printable ASCII encoded
        "&U,B-",  # padding bits set
        "&",  # unterminated
        "&A-",  # truncated base64
        "&2D0-",  # lone surrogate
        "a\u00e9",  # 8-bit must be encoded
        "a\x01b",  # control character
        b"caf\xc3\xa9",  # bytes that are not ASCII
    ],
)
def test_invalid_raises_value_error(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        utf7.decode(bad)


@given(st.text())
def test_round_trip(text: str) -> None:
    wire = utf7.encode(text)
    assert wire.isascii()
    assert utf7.decode(wire) == text


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127)))
def test_decode_never_raises_anything_but_value_error(text: str) -> None:
    try:
        utf7.decode(text)
    except ValueError:
        pass
