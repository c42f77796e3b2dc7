"""The in-process token bucket behind the Limiter interface."""

from __future__ import annotations

from mailcore.ratelimit import TokenBucketLimiter


async def test_bucket_blocks_then_refills() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(3, 30.0, clock=lambda: now[0])
    for _ in range(3):
        assert await limiter.allowed("k")
        await limiter.record("k")
    assert not await limiter.allowed("k")
    assert await limiter.allowed("other")
    now[0] += 10.0  # one token back
    assert await limiter.allowed("k")
    await limiter.reset("k")
    assert await limiter.allowed("k")


async def test_bounded_memory() -> None:
    limiter = TokenBucketLimiter(1, 1.0, max_keys=10)
    for i in range(100):
        await limiter.record(str(i))
    assert len(limiter._buckets) == 10
