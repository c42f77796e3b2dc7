"""Where a message being received is kept: memory up to a threshold, then an unnamed temporary file.

Owns the one buffer of a message in flight, so at most one copy of it is in memory at any time; the
committed message is read back once, into a buffer sized exactly, with the headers we add in front
(`read_all(prefix)`). File writes are small appends to the page cache; they stay on the event loop.
It knows nothing of SMTP or the database.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO


class Spool:
    """Append-only message buffer that moves itself to disk past `threshold` bytes."""

    def __init__(self, threshold: int, directory: Path | None = None) -> None:
        self.threshold = threshold
        self.directory = directory
        self._mem: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self.size = 0

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        """Append content."""
        if not data:
            return
        if self._mem is not None and len(self._mem) + len(data) > self.threshold:
            # Unnamed file (removed at once on POSIX): nothing is left behind if the process dies.
            self._file = tempfile.TemporaryFile(dir=self.directory, prefix="smtp-")  # noqa: SIM115
            self._file.write(self._mem)
            self._mem = None
        if self._file is not None:
            self._file.write(data)
        else:
            assert self._mem is not None
            self._mem += data
        self.size += len(data)

    def read_all(self, prefix: bytes = b"") -> bytearray:
        """The whole message with `prefix` in front, in one buffer (the only full copy)."""
        out = bytearray(len(prefix) + self.size)
        out[: len(prefix)] = prefix
        if self._file is None:
            assert self._mem is not None
            out[len(prefix):] = self._mem
            self._mem = bytearray()  # drop the receive buffer: one copy in memory
            return out
        self._file.flush()
        self._file.seek(0)
        view = memoryview(out)[len(prefix):]
        while view:
            n = self._file.readinto(view)
            if not n:
                raise OSError("spool file shorter than written")
            view = view[n:]
        return out

    def head(self, limit: int) -> bytes:
        """The first `limit` bytes written (for reading the header block without loading the body)."""
        if self._file is None:
            assert self._mem is not None
            return bytes(self._mem[:limit])
        self._file.flush()
        return os.pread(self._file.fileno(), limit, 0)

    def close(self) -> None:
        """Release the buffer or file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = None
