"""The process's rate limits: built once from the settings and shared by SMTP, IMAP and the HTTP API.

Owns which limits exist, their names (the Redis key `<prefix>rl:<name>:<scope>` and the metric label),
their scope keys and their fallbacks when Redis is down (`mailcore.ratelimit_redis`):

  name               scope                    budget                              Redis down
  auth-fail-ip       ip:<address>             limits.auth_failures per window      bounded (local)
  auth-fail-account  login:<lower-case login>  limits.auth_failures per window      bounded (local)
  smtp-connections   ip:<address>             limits.smtp_connections_per_minute   open (local bucket)
  messages           account:<id>             limits.messages_per_hour             open (local bucket)
  api-requests       token:<id>|account:<id>  http.requests_per_minute             open (local bucket)

`AuthGuard` is the one way every protocol counts failed logins, so a failure over SMTP AUTH counts
against IMAP LOGIN and HTTP Basic too (and the reverse): look before verifying a password, charge both
buckets on a failure, refill the account's on success (never the address's: one known password must
not buy unlimited guessing from that address). Each refusal and failure is counted in `Metrics`.
No protocol lives here; callers turn a refusal into their own reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import Settings
from mailcore.metrics import Metrics
from mailcore.ratelimit_redis import Decision, Fallback, LocalBuckets, RateLimiter, RedisBuckets


@dataclass
class Limits:
    """Every shared limiter of one server process (see the module text for scopes and budgets)."""

    auth_ip: RateLimiter
    auth_account: RateLimiter
    smtp_connections: RateLimiter
    messages: RateLimiter
    api_requests: RateLimiter
    redis: RedisBuckets | None = None

    async def close(self) -> None:
        """Close the Redis connection, if any."""
        if self.redis is not None:
            await self.redis.close()


def build_limits(settings: Settings, metrics: Metrics) -> Limits:
    """The limiters, on Redis when `redis.url` is set (else in-process); denials counted in `metrics`."""
    redis = None
    if settings.redis.url:
        redis = RedisBuckets.from_url(settings.redis.url, timeout=settings.redis.timeout,
                                      retry_after=settings.redis.retry_after,
                                      on_error=metrics.redis_errors.inc)
    local = LocalBuckets()
    limits = settings.limits

    def limiter(name: str, capacity: float, window: float, fallback: Fallback) -> RateLimiter:
        return RateLimiter(name, capacity, window, fallback=fallback, redis=redis, local=local,
                           prefix=settings.redis.key_prefix,
                           on_deny=lambda n: metrics.rate_limit_hits.labels(n).inc())

    return Limits(
        auth_ip=limiter("auth-fail-ip", limits.auth_failures, limits.auth_failure_window, Fallback.BOUNDED),
        auth_account=limiter("auth-fail-account", limits.auth_failures, limits.auth_failure_window,
                             Fallback.BOUNDED),
        smtp_connections=limiter("smtp-connections", limits.smtp_connections_per_minute, 60.0, Fallback.OPEN),
        messages=limiter("messages", limits.messages_per_hour, 3600.0, Fallback.OPEN),
        api_requests=limiter("api-requests", settings.http.requests_per_minute, 60.0, Fallback.OPEN),
        redis=redis,
    )


class AuthGuard:
    """Failed logins per client address and per account, over every protocol together."""

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics

    def _keys(self, ip: str, login: str | None) -> list[tuple[RateLimiter, str]]:
        keys = [(self.limits.auth_ip, f"ip:{ip}")]
        if login:
            keys.append((self.limits.auth_account, f"login:{login.lower()}"))
        return keys

    async def refused(self, ip: str, login: str | None = None) -> tuple[str, Decision] | None:
        """Before checking a password: None if the attempt may go on, else the refusing limiter's name
        and decision (its `retry_after` says when to come back). Spends nothing."""
        for limiter, key in self._keys(ip, login):
            decision = await limiter.check(key)
            if not decision.allowed:
                return limiter.name, decision
        return None

    async def failed(self, protocol: str, ip: str, login: str | None) -> None:
        """A wrong password, unknown or disabled account: charge the address and the login name."""
        self.metrics.auth_failures.labels(protocol).inc()
        for limiter, key in self._keys(ip, login):
            await limiter.charge(key)

    async def succeeded(self, login: str) -> None:
        """A good login refills that account's bucket (not the address's)."""
        await self.limits.auth_account.reset(f"login:{login.lower()}")
