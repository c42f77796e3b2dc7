"""A guard against hangs, not a performance figure.

Tests of hostile input that once took quadratic or exponential time size that input so the old code
takes minutes, and the fixed code milliseconds, then wrap the call in `no_hang()`: it fails only when
the call takes longer than `LIMIT` seconds, two orders of magnitude above what the fixed code needs on
a loaded machine. Performance itself is measured in bench/, never asserted in tests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

LIMIT = 30.0


@contextlib.contextmanager
def no_hang() -> Iterator[None]:
    """Fail if the block takes more than `LIMIT` seconds (a GIL-holding call is not interrupted: the
    failure comes when it returns)."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < LIMIT, f"took {elapsed:.0f} s: the super-linear path is back"
