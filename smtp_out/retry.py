"""When to try again: exponential backoff with jitter, and the clock every time decision reads.

Owns the retry schedule only. Time is always read through a `Clock` handed in, so tests move time
instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

Clock = Callable[[], dt.datetime]

# Each delay is spread over ±JITTER of itself, so entries that failed together do not retry together.
JITTER = 0.2


def utc_now() -> dt.datetime:
    """The real clock (timezone-aware UTC)."""
    return dt.datetime.now(dt.UTC)


def backoff(attempts: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: initial, doubling, capped at maximum."""
    base = min(maximum, initial * 2 ** max(0, min(attempts - 1, 62)))
    spread = (rng or random).uniform(-JITTER, JITTER)
    return max(1.0, min(maximum, base * (1 + spread)))
