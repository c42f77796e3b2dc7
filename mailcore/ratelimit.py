"""Rate limits and lockouts behind one small interface, so a shared (Redis) limiter can replace this one.

`Limiter` is the seam: protocols ask `allowed(key)` before costly or abusable work and `record(key)` when
an event should count (a failed login). `TokenBucketLimiter` keeps buckets in this process: each key has
`capacity` tokens, refilled continuously at `capacity / window` per second; a key with less than one
token is blocked. Keys are opaque strings chosen by the caller (`smtp-auth-ip:192.0.2.1`).
It does no I/O and knows no protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Limiter(Protocol):
    """Counts events per key and says whether a key may go on."""

    async def allowed(self, key: str) -> bool:
        """Whether `key` still has budget (does not spend any)."""

    async def record(self, key: str, cost: float = 1.0) -> bool:
        """Spend `cost` from `key`'s budget; return whether it had that much."""

    async def reset(self, key: str) -> None:
        """Forget `key` (e.g. after a successful login)."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBucketLimiter:
    """An in-process token bucket per key; memory is bounded by `max_keys` (oldest keys dropped)."""

    def __init__(self, capacity: float, window: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity <= 0 or window <= 0:
            raise ValueError("capacity and window must be positive")
        self.capacity = capacity
        self.rate = capacity / window
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.pop(key, None)  # re-inserted below: dict order is recency order
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return bucket

    async def allowed(self, key: str) -> bool:
        return self._bucket(key).tokens >= 1.0

    async def record(self, key: str, cost: float = 1.0) -> bool:
        bucket = self._bucket(key)
        had = bucket.tokens >= cost
        bucket.tokens = max(0.0, bucket.tokens - cost)
        return had

    async def reset(self, key: str) -> None:
        self._buckets.pop(key, None)
