"""The DATA and BDAT content readers, sans-I/O: end of data, unstuffing, the smuggling table, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_in.dataread import MAX_LINE, ChunkReader, DataReader, Verdict

SMUGGLING = yaml.safe_load(
    (Path(__file__).parents[2] / "tests/data/smtp/smuggling-eod-variants.yaml").read_text())


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def read_all(wire: bytes, chunk: int = 65536, max_size: int = 10**9) -> tuple[DataReader, Sink]:
    """Feed `wire` in chunks as a session would; `reader.rest` gets everything after the end of data."""
    sink = Sink()
    reader = DataReader(sink, max_size)
    for i in range(0, len(wire), chunk):
        if reader.feed(wire[i:i + chunk]):
            reader.rest += wire[i + chunk:]
            break
    return reader, sink


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 65536])
@pytest.mark.parametrize(("wire", "content", "rest"), [
    (b".\r\n", b"", b""),
    (b"a\r\n.\r\n", b"a\r\n", b""),
    (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", b"QUIT\r\n"),
    (b"..\r\n.\r\n", b".\r\n", b""),  # RFC 5321 §4.5.2: the stuffed dot is removed
    (b"a\r\n..b\r\n.x\r\n.\r\n", b"a\r\n.b\r\nx\r\n", b""),
    (b"a\r\n\r\n.\r\n", b"a\r\n\r\n", b""),
])
def test_end_of_data_and_unstuffing(chunk: int, wire: bytes, content: bytes, rest: bytes) -> None:
    reader, sink = read_all(wire, chunk)
    assert reader.done and reader.verdict is Verdict.OK
    assert bytes(sink.data) == content
    assert reader.rest == rest


@pytest.mark.parametrize("name", sorted(SMUGGLING["variants"]))
@pytest.mark.parametrize("chunk", [1, 5, 65536])
def test_smuggling_variants(name: str, chunk: int) -> None:
    """Every variant but `legit`: one message, ending only at the real CRLF.CRLF, and refused."""
    wire = (SMUGGLING["header"] + SMUGGLING["body_prefix"] + SMUGGLING["variants"][name]["bytes"]
            + SMUGGLING["smuggled"] + "\r\n.\r\n").encode("latin-1")
    reader, sink = read_all(wire + b"NOOP\r\n", chunk)
    assert reader.done
    if name == "legit":
        # The terminator ends the message; what follows is commands (the client's business).
        assert reader.verdict is Verdict.OK
        assert reader.rest.startswith(b"MAIL FROM:<spoof@victim.example>")
    else:
        assert reader.rest == b"NOOP\r\n", "the message must end only at the final CRLF.CRLF"
        assert reader.verdict in (Verdict.BARE_CR_LF, Verdict.NUL)
        assert b"spoof" not in sink.data  # nothing after the first problem is kept (and the session drops it all)


def test_size_limit_keeps_reading_to_the_end() -> None:
    reader, sink = read_all(b"x" * 500 + b"\r\n" + b"y\r\n" * 1000 + b".\r\nNOOP\r\n", 64, max_size=1000)
    assert reader.verdict is Verdict.TOO_BIG
    assert reader.rest == b"NOOP\r\n"


@pytest.mark.parametrize(("length", "ok"), [(MAX_LINE, True), (MAX_LINE + 1, False), (100_000, False)])
@pytest.mark.parametrize("chunk", [100, 65536])
def test_line_length(length: int, ok: bool, chunk: int) -> None:
    reader, _ = read_all(b"a\r\n" + b"x" * length + b"\r\nb\r\n.\r\nNOOP\r\n", chunk)
    assert reader.verdict is (Verdict.OK if ok else Verdict.LINE_TOO_LONG)
    assert reader.rest == b"NOOP\r\n"


def test_stuffed_line_of_max_length_is_fine() -> None:
    reader, sink = read_all(b"." + b"." * MAX_LINE + b"\r\n.\r\n", 10)
    assert reader.verdict is Verdict.OK
    assert sink.data == b"." * MAX_LINE + b"\r\n"


def first_end_of_data(wire: bytes) -> int:
    """Index of the first line that is exactly '.' (a line starts at 0 or after CRLF), by brute force."""
    for p in range(len(wire)):
        if wire.startswith(b".\r\n", p) and (p == 0 or wire[p - 2:p] == b"\r\n"):
            return p
    raise AssertionError("no end of data")


@given(st.binary(max_size=3000) | st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\0", b"\r\n", b"x" * 500]))
       .map(b"".join),
       st.integers(min_value=1, max_value=700))
@settings(max_examples=400, deadline=None)
def test_any_input_ends_exactly_at_the_first_dot_line(body: bytes, chunk: int) -> None:
    """Whatever the content, the message ends at the first line that is exactly '.', nowhere else, and
    content that is kept is the wire text with one leading dot removed from each line (RFC 5321 §4.5.2)."""
    wire = body + b"\r\n.\r\nTAIL"
    reader, sink = read_all(wire, chunk)
    assert reader.done
    end = first_end_of_data(wire)
    assert reader.rest == wire[end + 3:]
    lines = [x[1:] if x.startswith(b".") else x for x in wire[:end].split(b"\r\n")]
    # which verdict wins depends on where the chunks split the problems; that there is one does not
    problems = {verdict for verdict, found in (
        (Verdict.BARE_CR_LF, any(b"\r" in x or b"\n" in x for x in lines)),
        (Verdict.NUL, any(b"\0" in x for x in lines)),
        (Verdict.LINE_TOO_LONG, any(len(x) > MAX_LINE for x in lines))) if found}
    assert reader.verdict in (problems or {Verdict.OK})
    if reader.verdict is Verdict.OK:
        assert bytes(sink.data) == b"\r\n".join(lines)


@pytest.mark.parametrize("sizes", [[5], [1, 1, 1, 1, 1], [2, 3]])
def test_chunk_reader_any_boundaries(sizes: list[int]) -> None:
    sink = Sink()
    reader = ChunkReader(sink, 1000)
    data, pos = b"ab\r\nc", 0
    for n in sizes:
        reader.feed(data[pos:pos + n])
        pos += n
    assert reader.finish() is Verdict.OK
    assert sink.data == b"ab\r\nc"


@pytest.mark.parametrize(("data", "verdict"), [
    (b"a\nb\r\n", Verdict.BARE_CR_LF), (b"a\rb\r\n", Verdict.BARE_CR_LF), (b"a\0\r\n", Verdict.NUL),
    (b"x" * 2000 + b"\r\n", Verdict.LINE_TOO_LONG), (b"tail\r", Verdict.BARE_CR_LF),
])
def test_chunk_reader_refusals(data: bytes, verdict: Verdict) -> None:
    reader = ChunkReader(Sink(), 10_000)
    for i in range(0, len(data), 3):
        reader.feed(data[i:i + 3])
    assert reader.finish() is verdict
