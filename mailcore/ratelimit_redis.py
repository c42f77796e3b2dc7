"""Token-bucket rate limits shared through Redis (one atomic Lua script), with an in-process fallback.

Owns the bucket arithmetic, the Redis script, the key layout (`<prefix>rl:<limiter>:<scope key>`) and what
happens when Redis is unreachable. A `RateLimiter` is one policy (name, capacity, window, fallback); the
scope key (`ip:192.0.2.1`, `account:17`, `token:5`) is the caller's. Methods never raise for Redis
trouble and never wait longer than the configured timeout.

Each bucket holds up to `capacity` tokens and refills continuously at `capacity / window` per second.
`take` spends one token if there is one (throughput limits: requests, messages); `check` only looks and
`charge` always spends (auth failures: look before verifying a password, charge on failure).

Redis down, per limiter (`Fallback`):
  OPEN     throughput limits. While Redis answers, only the shared bucket counts. When it does not, the
           limiter falls back to its local bucket, which starts full: each instance then allows up to its
           own capacity, so the shared limit is exceeded by up to (instances - 1) x capacity. Mail keeps
           flowing; the outage is logged.
  BOUNDED  auth-failure limits. Every charge goes to the local bucket as well, and a request passes only if
           both agree. When Redis goes down the local bucket already holds this instance's history, so
           guessing stays bounded by the local capacity per instance, never reset by the outage.
After a Redis failure the `RedisBuckets` backend skips Redis for `retry_after` seconds (a breaker), so an
outage costs one timeout, not one per request. Transitions are logged once each way.

The in-process `LocalBuckets` has the same `take` interface, for when no Redis is configured.
This module does no other I/O and knows no protocol.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: capacity, refill rate (tokens/s), cost, force (1: spend even if short),
# need (tokens that must be there to pass). Time is Redis's own clock, so instances with skewed clocks
# agree. Returns {passed, tokens, retry_after} (numbers as strings: Lua numbers would be truncated).
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local passed = 0
if tokens >= need then
  passed = 1
end
-- Only a spend is written: refilling is a function of (tokens, ts, now), so a look changes nothing,
-- and a peek at an unknown key creates none.
if cost > 0 and (passed == 1 or force == 1) then
  tokens = math.max(0, tokens - cost)
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
end
local retry = 0
if passed == 0 then
  retry = (need - tokens) / rate
end
return {passed, tostring(tokens), tostring(retry)}
"""


class Fallback(enum.Enum):
    """What a limiter does when Redis is unreachable (see the module text)."""

    OPEN = "open"
    BOUNDED = "bounded"


@dataclass(frozen=True)
class Decision:
    """The answer for one request: whether it passes, and if not, when to retry."""

    allowed: bool
    retry_after: float = 0.0
    remaining: float = 0.0


class LocalBuckets:
    """Token buckets in this process; memory bounded by `max_keys` (least recently used dropped)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, capacity: float, rate: float, cost: float, force: bool, need: float) -> Decision:
        """Refill, test for `need` tokens, spend `cost` if passing (or `force`)."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - stamp) * rate)
        passed = tokens >= need
        if cost > 0 and (passed or force):  # only a spend is stored (a look creates no bucket)
            tokens = max(0.0, tokens - cost)
            self._buckets.pop(key, None)  # re-inserted last: dict order is recency order
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        return Decision(passed, 0.0 if passed else (need - tokens) / rate, tokens)

    async def forget(self, key: str) -> None:
        """Drop a bucket (it is full again)."""
        self._buckets.pop(key, None)


class RedisBuckets:
    """Token buckets in Redis, through one Lua script; `take` returns None when Redis cannot answer."""

    def __init__(self, client: Any, *, timeout: float, retry_after: float,
                 on_error: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.timeout = timeout
        self.retry_after = retry_after
        self._script = client.register_script(TOKEN_BUCKET_LUA)
        self._on_error = on_error
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float, retry_after: float,
                 on_error: Callable[[], None] | None = None) -> RedisBuckets:
        """A backend on a new client that never retries on its own (we have the local fallback)."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                         retry=Retry(NoBackoff(), 0), health_check_interval=0)
        return cls(client, timeout=timeout, retry_after=retry_after, on_error=on_error)

    @property
    def available(self) -> bool:
        """Whether Redis is being used now (False while the breaker is open)."""
        return self._clock() >= self._down_until

    async def take(self, key: str, capacity: float, rate: float, cost: float, force: bool,
                   need: float) -> Decision | None:
        """Run the script on `key`; None if Redis is down or slow (then the caller uses its fallback)."""
        if not self.available:
            return None
        try:
            passed, tokens, retry = await asyncio.wait_for(
                self._script(keys=[key], args=[capacity, rate, cost, 1 if force else 0, need]), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: fall back, never fail the client
            self._failed(exc)
            return None
        if self._down:
            self._down = False
            log.info("redis rate limiting restored")
        return Decision(bool(int(passed)), float(retry), float(tokens))

    async def forget(self, key: str) -> None:
        """Delete a bucket; ignored if Redis is down."""
        if not self.available:
            return
        try:
            await asyncio.wait_for(self.client.delete(key), self.timeout)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self.retry_after
        if self._on_error is not None:
            self._on_error()
        if not self._down:
            self._down = True
            log.warning("redis unavailable: rate limits use local buckets",
                        extra={"error": type(exc).__name__, "retry_in": self.retry_after})

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


class RateLimiter:
    """One limit (e.g. "api requests per token"), shared through Redis when configured."""

    def __init__(self, name: str, capacity: float, window: float, *, fallback: Fallback = Fallback.OPEN,
                 redis: RedisBuckets | None = None, local: LocalBuckets | None = None, prefix: str = "",
                 on_deny: Callable[[str], None] | None = None) -> None:
        if capacity <= 0 or window <= 0:
            raise ValueError("capacity and window must be positive")
        self.name = name
        self.capacity = float(capacity)
        self.window = float(window)
        self.rate = self.capacity / self.window
        self.fallback = fallback
        self.redis = redis
        self.local = local if local is not None else LocalBuckets()
        self.prefix = prefix
        self._on_deny = on_deny

    def _key(self, key: str) -> str:
        return f"{self.prefix}rl:{self.name}:{key}"

    async def _run(self, key: str, cost: float, force: bool) -> Decision:
        need = max(cost, 1.0)
        full = self._key(key)
        shared = None
        if self.redis is not None:
            shared = await self.redis.take(full, self.capacity, self.rate, cost, force, need)
        if shared is not None and self.fallback is Fallback.OPEN:
            decision = shared
        else:
            local = await self.local.take(full, self.capacity, self.rate, cost, force, need)
            if shared is None:
                decision = local
            else:  # BOUNDED with Redis up: both must agree; wait for the later of the two
                decision = Decision(shared.allowed and local.allowed,
                                    max(shared.retry_after, local.retry_after),
                                    min(shared.remaining, local.remaining))
        if not decision.allowed and self._on_deny is not None:
            self._on_deny(self.name)
        return decision

    async def take(self, key: str, cost: float = 1.0) -> Decision:
        """Spend `cost` tokens if there are that many (at least one); the decision says if it passed."""
        return await self._run(key, cost, force=False)

    async def check(self, key: str) -> Decision:
        """Whether `key` has a token left; spends nothing."""
        return await self._run(key, 0.0, force=False)

    async def charge(self, key: str, cost: float = 1.0) -> Decision:
        """Spend `cost` tokens whatever is left (e.g. a failed login); the decision says if there were enough."""
        return await self._run(key, cost, force=True)

    # The small `Limiter` interface the protocols use (allowed / record / reset).
    async def allowed(self, key: str) -> bool:
        """Whether `key` still has budget (spends none)."""
        return (await self.check(key)).allowed

    async def record(self, key: str, cost: float = 1.0) -> bool:
        """Count an event against `key`; return whether it was within budget."""
        return (await self.charge(key, cost)).allowed

    async def reset(self, key: str) -> None:
        """Forget `key` everywhere (e.g. after a successful login)."""
        full = self._key(key)
        await self.local.forget(full)
        if self.redis is not None:
            await self.redis.forget(full)
