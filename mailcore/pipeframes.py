"""Length-prefixed pickles: how the server talks to child processes of its own over their stdin/stdout.

Two children speak it: the search text decoder (`storage.textbatch`, a request and a reply per batch)
and a worker process (`mailserver.workers`: its start frame, then the primary's metrics requests and its
replies). Pickle is safe here only because both ends are this program and the pipe is private to them;
nothing read from a socket is ever decoded with it. A frame is 8 bytes of length (big-endian), then the
pickle. A reader gets EOFError when the pipe ends and `FrameError`, an EOFError too, when it carries
something that is not a frame: either way nothing more can be read from it in step.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, BinaryIO

HEADER = 8


class FrameError(EOFError):
    """The pipe carried something that is not a frame (a stray write into it): the stream is lost, as if
    it had ended."""


def _value(payload: bytes) -> Any:
    try:
        return pickle.loads(payload)  # noqa: S301 - written by our own process, over our own pipe
    except Exception as exc:  # unpickling fails in many ways: each means the same here
        raise FrameError(f"not a frame: {exc!r}") from exc


def frame(value: Any) -> bytes:
    """`value` as one frame."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


def read_frame(inp: BinaryIO) -> Any:
    """The next frame's value from a blocking pipe; EOFError once the pipe ends before a whole frame."""
    head = inp.read(HEADER)
    if len(head) < HEADER:
        raise EOFError("the pipe ended before a frame")
    size = int.from_bytes(head, "big")
    payload = inp.read(size)
    if len(payload) < size:
        raise EOFError("the pipe ended inside a frame")
    return _value(payload)


async def receive_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's value from a child's pipe; EOFError (IncompleteReadError) if it ends first."""
    size = int.from_bytes(await reader.readexactly(HEADER), "big")
    return _value(await reader.readexactly(size))
