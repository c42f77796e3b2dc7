"""The pipe protocol between the server and its own children (the text decoder, worker processes)."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import pytest

from mailcore.pipeframes import HEADER, FrameError, frame, read_frame, receive_frame

VALUES = [None, ("plan", ([(1, 2, 3, None)], 100)), b"\x00x" * 10_000, {"k": [1.5, "\u00e9"]}]


def test_frames_read_back_in_order_through_a_real_pipe() -> None:
    r, w = os.pipe()
    with os.fdopen(w, "wb") as out:
        out.write(b"".join(frame(v) for v in VALUES[:3]))  # fits the pipe buffer: no reader thread needed
    with os.fdopen(r, "rb") as inp:
        assert [read_frame(inp) for _ in range(3)] == VALUES[:3]
        with pytest.raises(EOFError):
            read_frame(inp)


@pytest.mark.parametrize("cut", [0, 3, HEADER, HEADER + 1])
def test_a_pipe_ending_inside_a_frame_is_eoferror(cut: int) -> None:
    data = frame(VALUES[1])
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(data[:cut]))


async def test_a_child_s_frames_are_received_and_its_end_is_eoferror() -> None:
    script = ("import sys; from mailcore.pipeframes import frame; "
              f"sys.stdout.buffer.write(b''.join(frame(v) for v in {VALUES!r}) + frame(1)[:5])")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
                                                cwd=os.getcwd())
    assert proc.stdout is not None
    assert [await receive_frame(proc.stdout) for _ in VALUES] == VALUES
    with pytest.raises(EOFError):
        await receive_frame(proc.stdout)
    assert await proc.wait() == 0


async def test_bytes_that_are_no_frame_are_a_frame_error_an_eoferror() -> None:
    """A stray write into the pipe loses the stream as its end would: readers need catch only EOFError."""
    garbage = (3).to_bytes(HEADER, "big") + b"not"
    with pytest.raises(FrameError):
        read_frame(io.BytesIO(garbage))
    reader = asyncio.StreamReader()
    reader.feed_data(garbage)
    with pytest.raises(FrameError):
        await receive_frame(reader)
    assert issubclass(FrameError, EOFError)
