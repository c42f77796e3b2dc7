import pytest
from hypothesis import given
from hypothesis import strategies as st

from imap.sequence import SeqRange, SequenceSet, format_numbers, parse


@pytest.mark.parametrize(
    ("text", "largest", "expected"),
    [
        ("1:*", 5, [(1, 5)]),
        ("5:3", 10, [(3, 5)]),
        ("1,3:4,*", 9, [(1, 1), (3, 4), (9, 9)]),
        ("10:*", 7, [(7, 7)]),  # RFC 3501 §6.4.8: N:* above the largest still names the last
        ("*", 0, []),
        ("1:*", 0, []),
        ("8:9", 5, []),
        ("2,1,3:5,4", 9, [(1, 5)]),
        ("*:4", 6, [(4, 6)]),
        ("4294967295", 3, []),
    ],
)
def test_resolve(text: str, largest: int, expected: list[tuple[int, int]]) -> None:
    assert parse(text).resolve(largest) == expected


def test_structure() -> None:
    assert parse("1,3:4,*") == SequenceSet((SeqRange(1, 1), SeqRange(3, 4), SeqRange(None, None)))
    assert parse("$").saved
    assert str(parse("1,3:4,*")) == "1,3:4,*"


@pytest.mark.parametrize("bad", ["0", "1:0", "0:*", "a", "1,,2", "", "1:", ":3", "-1", "1 2", "01", "4294967296", "$1", "1:2:3"])
def test_reject(bad: str) -> None:
    with pytest.raises(ValueError):
        parse(bad)


def test_strict_rejects_numbers_past_largest() -> None:
    with pytest.raises(ValueError):
        parse("7").resolve(5, strict=True)
    assert parse("2:*").resolve(5, strict=True) == [(2, 5)]


def test_saved_needs_session() -> None:
    with pytest.raises(ValueError):
        parse("$").resolve(3)


def test_iter_and_contains() -> None:
    assert list(parse("3,1:2,*").iter(5)) == [1, 2, 3, 5]
    assert parse("1:3").contains(2, 9)
    assert not parse("1:3").contains(4, 9)


@pytest.mark.parametrize(("numbers", "text"), [([1, 2, 3, 5], "1:3,5"), ([], ""), ([7], "7"), ([4, 5, 1, 2], "4:5,1:2")])
def test_format(numbers: list[int], text: str) -> None:
    assert format_numbers(numbers) == text


@given(st.sets(st.integers(1, 200)), st.integers(0, 250))
def test_format_parse_round_trip(numbers: set[int], largest: int) -> None:
    if not numbers:
        return
    text = format_numbers(sorted(numbers))
    assert set(parse(text).iter(largest)) == {n for n in numbers if n <= largest}
