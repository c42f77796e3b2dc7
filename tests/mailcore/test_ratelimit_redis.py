"""Token buckets: in-process, against the real Redis (127.0.0.1:6379), and with Redis unreachable or stopped."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from mailcore.ratelimit_redis import Fallback, LocalBuckets, RateLimiter, RedisBuckets

SHARED_REDIS = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def shared() -> AsyncIterator[RedisBuckets]:
    backend = RedisBuckets.from_url(SHARED_REDIS, timeout=1.0, retry_after=5.0)
    yield backend
    await backend.close()


def _prefix() -> str:
    return f"mstest:{uuid.uuid4().hex}:"


# --- in-process ------------------------------------------------------------------------------------------

async def test_local_bucket_spends_refills_and_says_when() -> None:
    clock = Clock()
    limiter = RateLimiter("req", capacity=3, window=60, local=LocalBuckets(clock=clock))
    assert [(await limiter.take("k")).allowed for _ in range(4)] == [True, True, True, False]
    denied = await limiter.take("k")
    assert denied.retry_after == pytest.approx(20.0)  # one token per 20 s
    clock.now += 20
    assert (await limiter.take("k")).allowed
    assert not (await limiter.take("k")).allowed
    assert (await limiter.take("other")).allowed  # keys are independent


async def test_local_check_spends_nothing_and_charge_always_spends() -> None:
    clock = Clock()
    limiter = RateLimiter("auth", capacity=2, window=3600, local=LocalBuckets(clock=clock))
    assert all([(await limiter.check("ip")).allowed for _ in range(10)])
    assert await limiter.record("ip") and await limiter.record("ip")
    assert not await limiter.allowed("ip")
    assert not await limiter.record("ip")  # over budget: still counted, still refused
    await limiter.reset("ip")
    assert await limiter.allowed("ip")


async def test_local_memory_is_bounded() -> None:
    buckets = LocalBuckets(max_keys=10)
    limiter = RateLimiter("req", capacity=1, window=60, local=buckets)
    for i in range(100):
        await limiter.take(f"k{i}")
    assert len(buckets._buckets) == 10


# --- the real Redis --------------------------------------------------------------------------------------

async def test_redis_bucket_is_shared_between_limiters(shared: RedisBuckets) -> None:
    prefix = _prefix()
    # Two instances of the server: separate local buckets, one Redis.
    a = RateLimiter("msg", capacity=5, window=3600, redis=shared, prefix=prefix)
    b = RateLimiter("msg", capacity=5, window=3600, redis=shared, prefix=prefix)
    results = [(await (a if i % 2 else b).take("account:1")).allowed for i in range(7)]
    assert results == [True] * 5 + [False] * 2
    denied = await a.take("account:1")
    assert 0 < denied.retry_after <= 720.0  # 3600/5 s per token
    assert await shared.client.exists(f"{prefix}rl:msg:account:1")
    ttl = await shared.client.pttl(f"{prefix}rl:msg:account:1")
    assert 0 < ttl <= 3600 * 1000 + 1000  # keys expire once full again
    await a.reset("account:1")
    assert (await b.take("account:1")).allowed
    await shared.client.delete(f"{prefix}rl:msg:account:1")


async def test_redis_script_is_atomic_under_concurrency(shared: RedisBuckets) -> None:
    prefix = _prefix()
    limiter = RateLimiter("burst", capacity=20, window=3600, redis=shared, prefix=prefix)
    results = await asyncio.gather(*[limiter.take("k") for _ in range(100)])
    assert sum(d.allowed for d in results) == 20
    await shared.client.delete(f"{prefix}rl:burst:k")


async def test_redis_refills_with_time(shared: RedisBuckets) -> None:
    prefix = _prefix()
    limiter = RateLimiter("fast", capacity=2, window=0.2, redis=shared, prefix=prefix)  # 10 tokens/s
    assert (await limiter.take("k")).allowed and (await limiter.take("k")).allowed
    denied = await limiter.take("k")
    assert not denied.allowed and 0 < denied.retry_after <= 0.1
    await asyncio.sleep(denied.retry_after + 0.02)
    assert (await limiter.take("k")).allowed


# --- Redis unreachable or going away ---------------------------------------------------------------------

async def test_closed_port_falls_back_fast_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[int] = []
    backend = RedisBuckets.from_url(f"redis://127.0.0.1:{_free_port()}/0", timeout=0.2, retry_after=60,
                                    on_error=lambda: errors.append(1))
    throughput = RateLimiter("req", capacity=3, window=60, redis=backend, fallback=Fallback.OPEN)
    caplog.set_level(logging.WARNING, logger="mailcore.ratelimit_redis")
    results = [(await throughput.take("k")).allowed for _ in range(5)]
    assert results == [True, True, True, False, False]  # the local bucket still limits
    assert len(errors) == 1  # Redis tried once: the breaker skips it afterwards (no timing asserted)
    assert [r.message for r in caplog.records].count("redis unavailable: rate limits use local buckets") == 1
    await backend.close()


async def test_blackholed_redis_costs_at_most_the_timeout() -> None:
    # A listener that accepts and never answers: the worst kind of outage.
    server = await asyncio.start_server(lambda r, w: asyncio.sleep(3600), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBuckets.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.15, retry_after=60)
    limiter = RateLimiter("req", capacity=1, window=60, redis=backend)
    # The limiter must give up on Redis and answer from its fallback. Without the timeout this would
    # wait for the hour the listener sleeps; the 10 s guard only catches that hang, it times nothing
    # (a tight bound here failed on a loaded CI machine: 0.37 s against 0.25).
    async with asyncio.timeout(10):
        assert (await limiter.take("k")).allowed
    server.close()
    await backend.close()


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a free port, so a test may stop it (never the shared one)."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is needed for this test (tests/run.sh installs it)"
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


async def test_redis_stopped_mid_test_behaves_as_documented(
        private_redis: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = private_redis
    clock = Clock()
    failures: list[float] = []
    backend = RedisBuckets.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.25, retry_after=5.0,
                                    on_error=lambda: failures.append(clock()))
    backend._clock = clock
    throughput = RateLimiter("req", capacity=3, window=3600, redis=backend, fallback=Fallback.OPEN,
                             local=LocalBuckets(clock=clock))
    auth = RateLimiter("authfail", capacity=3, window=3600, redis=backend, fallback=Fallback.BOUNDED,
                       local=LocalBuckets(clock=clock))
    # Redis up: the shared buckets are spent.
    assert [(await throughput.take("k")).allowed for _ in range(4)] == [True, True, True, False]
    assert [await auth.record("ip") for _ in range(3)] == [True, True, True]
    assert not await auth.allowed("ip")

    proc.terminate()
    proc.wait(5)

    # Redis down. Throughput fails open to a fresh local bucket (bounded by its capacity)...
    assert failures == []
    assert [(await throughput.take("k")).allowed for _ in range(4)] == [True, True, True, False]
    # ...auth failures stay bounded: the local bucket saw every failure while Redis was up.
    assert not await auth.allowed("ip")
    assert not await auth.record("ip")
    # Redis was tried once: that failure opened the breaker, and the other five calls did not try (and wait
    # for) it again.
    assert len(failures) == 1
    assert not backend.available
    await backend.close()
