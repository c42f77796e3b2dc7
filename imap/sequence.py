"""IMAP sequence sets: `1:*`, `5:3`, `1,3:4,*`, and `$` (RFC 3501 §9 sequence-set, RFC 5182).

Owns: parsing a sequence set into ranges, resolving it against the highest sequence number or
UID, and writing a set of numbers back compactly (for COPYUID, ESEARCH).
Must not: know about mailboxes or do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_NUM = re.compile(r"[1-9][0-9]*\Z")
MAX_NUMBER = 0xFFFFFFFF  # RFC 3501 §9 nz-number fits in 32 bits


@dataclass(frozen=True, slots=True)
class SeqRange:
    """One element: `start:end`; None stands for `*` (the largest number in use)."""

    start: int | None
    end: int | None

    def __str__(self) -> str:
        a = "*" if self.start is None else str(self.start)
        if self.start == self.end:
            return a
        return a + ":" + ("*" if self.end is None else str(self.end))


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set. `saved` is the RFC 5182 `$` (the last SEARCH result)."""

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    def __str__(self) -> str:
        return "$" if self.saved else ",".join(str(r) for r in self.ranges)

    def resolve(self, largest: int, *, strict: bool = False) -> list[tuple[int, int]]:
        """Merged, sorted (low, high) ranges within 1..largest.

        RFC 3501 §6.4.8 / §9: `*` is `largest`, `a:b` equals `b:a`, so `N:*` with N above the
        largest UID still names the last message. Numbers past `largest` are dropped, unless
        `strict` (message sequence numbers), where they raise ValueError.
        """
        if self.saved:
            raise ValueError("'$' must be resolved against the saved search result")
        spans: list[tuple[int, int]] = []
        for r in self.ranges:
            a = largest if r.start is None else r.start
            b = largest if r.end is None else r.end
            lo, hi = max(min(a, b), 1), max(a, b)
            if strict and hi > largest and (r.start is not None or r.end is not None):
                raise ValueError("message sequence number out of range")
            hi = min(hi, largest)
            if lo <= hi:
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def iter(self, largest: int, *, strict: bool = False) -> Iterator[int]:
        """Each number in the set, ascending (see `resolve`)."""
        for lo, hi in self.resolve(largest, strict=strict):
            yield from range(lo, hi + 1)

    def contains(self, number: int, largest: int) -> bool:
        return any(lo <= number <= hi for lo, hi in self.resolve(largest))


def _number(text: str) -> int | None:
    if text == "*":
        return None
    if not _NUM.match(text):
        raise ValueError(f"invalid sequence number {text!r}")
    value = int(text)
    if value > MAX_NUMBER:
        raise ValueError(f"sequence number {text} too large")
    return value


def parse(text: str | bytes) -> SequenceSet:
    """Parse a sequence set; raises ValueError on 0, empty elements or junk."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("invalid sequence set") from None
    if text == "$":
        return SequenceSet(saved=True)
    if not text:
        raise ValueError("empty sequence set")
    ranges: list[SeqRange] = []
    for element in text.split(","):
        a, colon, b = element.partition(":")
        start = _number(a)
        end = _number(b) if colon else start
        ranges.append(SeqRange(start, end))
    return SequenceSet(tuple(ranges))


def format_numbers(numbers: Iterable[int]) -> str:
    """Write numbers compactly in the given order: [1, 2, 3, 5] -> "1:3,5".

    Order is kept (COPYUID's source and destination sets must pair up, RFC 4315 §3).
    """
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
