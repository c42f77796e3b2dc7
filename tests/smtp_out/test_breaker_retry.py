"""smtp_out.breaker and smtp_out.retry: pure state machines driven by a hand-moved clock."""

from __future__ import annotations

import datetime as dt
import random

from smtp_out.breaker import CircuitBreaker
from smtp_out.retry import backoff


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def test_breaker_opens_holds_probes_once_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown=60, clock=clock)
    for _ in range(2):
        assert b.allow("mx")
        b.failure("mx")
    assert b.state("mx") == "closed"
    b.failure("mx")
    assert b.state("mx") == "open" and not b.allow("mx")
    assert b.retry_at("mx") == clock.now + dt.timedelta(seconds=60)
    assert b.allow("other")  # per destination
    clock.advance(61)
    assert b.state("mx") == "half-open"
    assert b.allow("mx") and not b.allow("mx")  # exactly one probe
    b.failure("mx")  # the probe failed: open again at once
    assert b.state("mx") == "open"
    clock.advance(61)
    assert b.allow("mx")
    b.success("mx")
    assert b.state("mx") == "closed" and b.allow("mx") and b.allow("mx")


def test_success_resets_the_count() -> None:
    b = CircuitBreaker(threshold=2, cooldown=60, clock=Clock())
    b.failure("mx")
    b.success("mx")
    b.failure("mx")
    assert b.state("mx") == "closed"


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff(n, 300, 4 * 3600, rng) for n in range(1, 12)]
    for n, d in enumerate(delays[:5], start=1):
        assert 300 * 2 ** (n - 1) * 0.8 <= d <= 300 * 2 ** (n - 1) * 1.2
    assert all(d <= 4 * 3600 for d in delays)
    assert delays[-1] >= 4 * 3600 * 0.8
    assert backoff(10**6, 300, 3600) <= 3600
