"""What the HTTP API is built from: settings, the store, metrics, limits and the submission seam.

Routes read everything from one `ApiContext` (on `app.state.ctx`), so a test builds the API with its own
pool, metrics registry and limiters, and nothing is module-global.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from config.settings import Settings
from mailcore.autoconfig import Endpoints, endpoints_from_settings
from mailcore.metrics import Metrics
from mailcore.ratelimit_redis import Fallback, LocalBuckets, RateLimiter, RedisBuckets
from mailserver.api.submission import Submitter


@dataclass
class Limits:
    """The rate limits the API enforces (and the protocols may share)."""

    requests: RateLimiter  # per token, or per account for Basic
    messages: RateLimiter  # per account, API and submission together
    auth_ip: RateLimiter  # failed logins per client address
    auth_account: RateLimiter  # failed logins per account
    redis: RedisBuckets | None = None

    async def close(self) -> None:
        """Close the Redis connection, if any."""
        if self.redis is not None:
            await self.redis.close()


def build_limits(settings: Settings, metrics: Metrics) -> Limits:
    """The limiters of `settings.http`, on Redis when `settings.redis.url` is set, else in-process."""
    redis = None
    if settings.redis.url:
        redis = RedisBuckets.from_url(settings.redis.url, timeout=settings.redis.timeout,
                                      retry_after=settings.redis.retry_after,
                                      on_error=metrics.redis_errors.inc)
    local = LocalBuckets()
    http = settings.http

    def limiter(name: str, capacity: float, window: float, fallback: Fallback) -> RateLimiter:
        return RateLimiter(name, capacity, window, fallback=fallback, redis=redis, local=local,
                           prefix=settings.redis.key_prefix,
                           on_deny=lambda n: metrics.rate_limit_hits.labels(n).inc())

    return Limits(
        requests=limiter("api-requests", http.requests_per_minute, 60.0, Fallback.OPEN),
        messages=limiter("messages", http.messages_per_hour, 3600.0, Fallback.OPEN),
        auth_ip=limiter("auth-fail-ip", http.auth_failures_per_hour, 3600.0, Fallback.BOUNDED),
        auth_account=limiter("auth-fail-account", http.auth_failures_per_hour, 3600.0, Fallback.BOUNDED),
        redis=redis,
    )


@dataclass
class ApiContext:
    """Everything a request handler may use."""

    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    limits: Limits
    submitter: Submitter
    endpoints: Endpoints

    @classmethod
    def build(cls, settings: Settings, pool: asyncpg.Pool, metrics: Metrics, limits: Limits,
              submitter: Submitter) -> ApiContext:
        """A context whose client endpoints come from the configured listeners."""
        return cls(settings=settings, pool=pool, metrics=metrics, limits=limits, submitter=submitter,
                   endpoints=endpoints_from_settings(settings))
