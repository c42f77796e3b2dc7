"""Decoding a batch of messages for the full-text index, in a process of its own.

Owns: the CPU-bound half of the indexer (storage.bodyindex): planning which bytes of each claimed message
hold text, and decoding them into folded text and word codes (mailcore.mime.searchtext). `BatchDecoder` is
that work, with no I/O. The indexer runs it in a child process (`python -m storage.textbatch`, speaking
length-prefixed pickles on its stdin and stdout: `serve`), so that decoding runs on another core under
its own GIL: in a worker thread it took the server's GIL for its whole share of each delivery, and every
SMTP and IMAP session waited on it. Tests and `index_all` run it in a thread.
Must not: touch the database or the network.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from mailcore.mime.searchtext import SearchText, codes_literal, root_type, search_text, text_ranges
from mailcore.pipeframes import frame, read_frame

# Bytes of a message's text stretches read per character of `max_text`: base64 carries 3 bytes in 4, a
# UTF-8 character takes up to 4, quoted-printable up to 3 per byte; past this the text is cut anyway.
_BYTES_PER_CHAR = 4


@dataclass(frozen=True, slots=True)
class _Planned:
    """One claimed message: its part list and the window of raw bytes (from the start: the header tells
    the message's own type) that holds every stretch of text it may have."""

    id: int
    parts: list[Any]
    body_offset: int
    size: int
    length: int
    ranges: list[tuple[int, int, str, str | None]]
    top_html: bool  # a text/html part at the top level: its ranges depend on the message's own type


def _plan(message_id: int, size: int, body_offset: int, parts: Any, max_text: int) -> _Planned:
    if isinstance(parts, str):
        try:
            parts = json.loads(parts)
        except ValueError:
            parts = None
    if not isinstance(parts, list):
        parts = []
    ranges = text_ranges(parts, body_offset, size)
    top_html = any(isinstance(x, dict) and x.get("content_type") == "text/html" and "." not in str(x.get("number"))
                   for x in parts)
    hi = min(max(r[1] for r in ranges), ranges[0][0] + max_text * _BYTES_PER_CHAR) if ranges else 0
    return _Planned(message_id, parts, body_offset, size, hi, ranges, top_html)


@dataclass(slots=True)
class Extracted:
    """What one batch stores, per message in the order planned: its folded text, word codes (as a
    PostgreSQL array literal: one parameter for a list of arrays of different lengths), whether its words
    narrow a search (not when one was too long) and whether the text is whole; all the batch's words
    (UTF-8); and the messages whose decoding failed, with the error (they get an empty, incomplete text:
    SEARCH reads their raw bytes, and the indexer does not retry them forever)."""

    texts: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    narrowable: list[bool] = field(default_factory=list)
    complete: list[bool] = field(default_factory=list)
    words: set[bytes] = field(default_factory=set)
    failed: list[tuple[int, str]] = field(default_factory=list)


class BatchDecoder:
    """One batch at a time: `plan` the claimed rows, then `extract` from the windows read for them."""

    def __init__(self) -> None:
        self._planned: list[_Planned] = []

    def plan(self, rows: list[tuple[int, int, int, Any]], max_text: int) -> list[tuple[int, int]]:
        """Rows are (id, size, body_offset, parts); returns (id, bytes of raw to read) per message, in order."""
        self._planned = [_plan(*row, max_text) for row in rows]
        return [(p.id, p.length) for p in self._planned]

    def extract(self, windows: dict[int, bytes], max_text: int) -> Extracted:
        """Decode every message planned last, from its window (missing: nothing to read)."""
        planned, self._planned = self._planned, []
        out = Extracted()
        for p in planned:
            try:
                window = windows.get(p.id, b"")
                # the message's own type matters only to top-level html parts (text_ranges): else the
                # plan's ranges stand, and the header is not parsed
                ranges = text_ranges(p.parts, p.body_offset, p.size, root_type(window[: p.body_offset])) \
                    if p.top_html else p.ranges
                text = search_text(ranges, window, 0, max_text)
            except Exception:  # a decoder bug must not stop the index for every later message
                out.failed.append((p.id, traceback.format_exc(limit=5)))
                text = SearchText("", False, None)
            out.texts.append(text.text)
            out.codes.append(codes_literal(text.words) if text.words else "{}")
            out.narrowable.append(text.words is not None)
            out.complete.append(text.complete)
            if text.words:
                out.words.update(text.words)
        return out


_CALLS = frozenset({"plan", "extract"})


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer (method name, args) requests with ("ok", result) or ("error", text) until the input ends.
    Both ends are this program's own: the server starts it and is the only one writing to it."""
    decoder = BatchDecoder()
    while True:
        try:
            name, args = read_frame(inp)
        except EOFError:  # the input ended, or is not frames (FrameError): nothing sensible to answer
            return
        try:
            if name not in _CALLS:
                raise ValueError(f"no such call: {name!r}")
            reply: tuple[str, Any] = ("ok", getattr(decoder, name)(*args))
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        out.write(frame(reply))
        out.flush()


def main() -> None:
    """The child's entry point: replies go to a private copy of stdout; fd 1 then points at stderr, so a
    stray print cannot corrupt them."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        serve(sys.stdin.buffer, out)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    # run by its module name, so that what it pickles is named storage.textbatch.*, not __main__.*
    from storage.textbatch import main as run

    run()
