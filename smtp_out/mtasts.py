"""Recipients' MTA-STS policies (RFC 8461) for the outbound queue: looked up, fetched and kept.

For each destination domain routed by MX: the `_mta-sts` TXT record's id through the shared resolver;
when it names a policy not held yet (or none is held), the policy file over HTTPS from
`mta-sts.<domain>` (port `queue.mta_sts_port`), its address from the same resolver and its certificate
verified (with `queue.tls_ca_file` when set), no redirects, at most 64 KiB, within `FETCH_TIMEOUT`.
A policy is kept for its max_age, in this process and, with a pool, in the database (`storage.stspolicies`):
a restart or another instance finds it there. A record that is gone, a DNS failure or a failed fetch leave
a policy still held in force (RFC 8461 §5.1: that is what defeats an attacker who strips the record);
without one, the domain has no policy.
`smtp_out.routing` applies an enforced policy: only matching MX hosts, TLS verified for each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import h11

from mailcore import mtasts
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError, ascii_name
from mailcore.dsn import field_value
from smtp_out import https
from storage import stspolicies
from storage.db import is_unavailable

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 20.0  # seconds for the whole HTTPS fetch (RFC 8461 §3.3 suggests no more than a minute)
# How long a domain found without a stored policy is not asked of the database again: most destinations
# have none, and a query per delivery to each would be a round trip for nothing. Another instance's new
# policy for it is then seen through the record (and a fetch) instead.
RECHECK_STORED = 3600.0
MAX_CHECKED = 100_000  # domains remembered as checked (forgotten all at once beyond)
PATH = "/.well-known/mta-sts.txt"


class FetchError(Exception):
    """The policy file could not be had (connection, TLS, HTTP status, type, size, syntax)."""


@dataclass(frozen=True)
class _Held:
    policy_id: str
    policy: mtasts.Policy
    until: float


class PolicySource:
    """The MTA-STS policies of destination domains, for one process."""

    def __init__(self, dns: DNSLookup, *, port: int = 443, ca_file: str = "", pool: asyncpg.Pool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dns = dns
        self.port = port
        self.ca_file = ca_file
        self.pool = pool
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._checked: dict[str, float] = {}  # domain -> when the database had no policy for it

    async def policy(self, domain: str) -> mtasts.Policy | None:
        """The policy in force for `domain`, or None."""
        domain = ascii_name(domain)  # one key (memory, database, DNS) for a U-label and its A-label
        held = self._held.get(domain)
        if held is not None and held.until <= self.clock():
            del self._held[domain]
            held = None
        if held is None and self._ask_store(domain):
            held = await self._load(domain)
            if held is None:
                if len(self._checked) >= MAX_CHECKED:
                    self._checked.clear()
                self._checked[domain] = self.clock()
        try:
            policy_id = mtasts.record_id(await self.dns.txt(f"_mta-sts.{domain}"))
        except (DNSNotFound, DNSTempError):
            policy_id = None
        if policy_id is None or (held is not None and held.policy_id == policy_id):
            return held.policy if held is not None else None
        try:
            text = await self._fetch(domain)
            policy = mtasts.parse_policy(text)
        except (FetchError, ValueError) as exc:
            log.warning("MTA-STS policy unavailable", extra={"domain": domain, "error": field_value(str(exc)),
                                                             "held": held is not None})
            return held.policy if held is not None else None
        self._held[domain] = _Held(policy_id, policy, self.clock() + policy.max_age)
        log.info("MTA-STS policy fetched", extra={"domain": domain, "mode": policy.mode, "id": policy_id})
        if self.pool is not None:
            await self._save(domain, policy_id, text, policy.max_age)
        return policy

    def _ask_store(self, domain: str) -> bool:
        """Whether to look for a stored policy: with a database, unless it had none within RECHECK_STORED."""
        checked = self._checked.get(domain)
        return self.pool is not None and (checked is None or self.clock() - checked >= RECHECK_STORED)

    async def _load(self, domain: str) -> _Held | None:
        """The policy kept in the database, held in memory from now on; None if none (or no database)."""
        now = dt.datetime.now(dt.UTC)
        try:
            stored = await stspolicies.load(self.pool, domain, now)  # type: ignore[arg-type]
            policy = mtasts.parse_policy(stored.text) if stored is not None else None
        except ValueError:
            return None
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return None  # the database away: the delivery itself will say so
        if stored is None or policy is None:
            return None
        held = _Held(stored.policy_id, policy, self.clock() + (stored.expires_at - now).total_seconds())
        self._held[domain] = held
        return held

    async def _save(self, domain: str, policy_id: str, text: str, max_age: int) -> None:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max_age)
        try:
            await stspolicies.save(self.pool, domain, policy_id, text, expires)  # type: ignore[arg-type]
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("MTA-STS policy not stored", extra={"domain": domain, "error": field_value(str(exc))})

    async def _fetch(self, domain: str) -> str:
        """The policy file's text; FetchError on anything but a 200 text/plain answer of sane size."""
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                answer = await https.request(self.dns, host, self.port, "GET", PATH, ca_file=self.ca_file,
                                             user_agent="mailserver MTA-STS", body_limit=mtasts.MAX_POLICY_SIZE)
        except TimeoutError as exc:
            raise FetchError(f"{host}: timed out") from exc
        except https.HTTPSError as exc:
            raise FetchError(f"{host}: {exc}") from exc
        except (OSError, DNSNotFound, DNSTempError, h11.ProtocolError) as exc:
            raise FetchError(f"{host}: {type(exc).__name__}: {exc}") from exc
        if answer.status != 200:  # RFC 8461 §3.3: no redirects, only 200
            raise FetchError(f"{host}: HTTP {answer.status}")
        if answer.content_type != b"text/plain":
            raise FetchError(f"{host}: Content-Type {answer.content_type.decode('latin-1')!r}, not text/plain")
        try:
            return answer.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FetchError(f"{host}: policy is not UTF-8") from exc
