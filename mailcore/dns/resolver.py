"""The real resolver: dnspython's asyncio stub resolver behind our `DNSLookup` interface.

It owns translating dnspython's answers and exceptions into plain data, `DNSNotFound` and `DNSTempError`,
and the answer cache (positive and negative, sized from `DNSSettings.cache_size`): a memo of what
`_query` concluded, kept for the answer's TTL (RFC 2308 §5 for negative ones). It replaces dnspython's
own cache rather than sitting in front of it: a hit there still costs about 80 µs (a Resolution object,
and for a negative answer an exception raised and translated), paid on every message by DMARC's lookup
of `_dmarc.<author domain>`, usually NXDOMAIN; two caches of the same answers would only be kept twice.
It must not block the event loop, must not use search domains (mail names are always absolute), and must
not be a module-level singleton: the composition root builds one and passes it down.
"""

from __future__ import annotations

import ipaddress
import logging
import time

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from config.settings import DNSSettings
from mailcore.dns import DNSNotFound, DNSTempError

log = logging.getLogger(__name__)

FALLBACK_NAMESERVER = "127.0.0.1"


def decode_txt(strings: list[bytes] | tuple[bytes, ...]) -> str:
    """Join a TXT record's character-strings and decode them without ever failing.

    UTF-8 when valid, else Latin-1 (every byte maps to one character, so nothing is lost)."""
    raw = b"".join(strings)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Resolver:
    """DNS lookups through dnspython's async resolver, configured from `DNSSettings`."""

    def __init__(self, settings: DNSSettings, resolv_conf: str = "/etc/resolv.conf") -> None:
        resolver = dns.asyncresolver.Resolver(configure=False)
        if settings.nameservers:
            resolver.nameservers = list(settings.nameservers)
        else:
            try:
                resolver.read_resolv_conf(resolv_conf)
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                log.warning("no usable name server in %s (%s): using %s", resolv_conf, exc,
                            FALLBACK_NAMESERVER)
                resolver.nameservers = [FALLBACK_NAMESERVER]
        resolver.port = settings.port
        # One attempt may not take longer than the whole lookup is allowed to.
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        resolver.cache = None  # the memo below is the cache
        self._resolver = resolver
        # (name as asked, type) -> (expiry in time.time(), the Answer, or for a negative answer whether
        # it was NXDOMAIN). Expiry is the answer's TTL (RFC 2308 §5 for negative ones); never a temperror.
        self._memo: dict[tuple[str, str], tuple[float, dns.resolver.Answer | bool]] = {}
        self._memo_size = settings.cache_size

    @property
    def nameservers(self) -> list[str]:
        """The name servers in use (for diagnostics)."""
        return [str(ns) for ns in self._resolver.nameservers]

    async def _query(self, name: str | dns.name.Name, rdtype: str) -> dns.resolver.Answer:
        label = str(name)
        key = (label, rdtype)
        hit = self._memo.get(key)
        if hit is not None:
            if hit[0] > time.time():
                if isinstance(hit[1], bool):
                    raise DNSNotFound(label, rdtype, nxdomain=hit[1])
                return hit[1]
            del self._memo[key]
        try:
            answer = await self._resolve(label, name, rdtype)
        except DNSNotFound as exc:
            ttl = negative_ttl(exc.__cause__)
            if ttl is not None:
                self._remember(key, time.time() + ttl, exc.nxdomain)
            raise
        self._remember(key, answer.expiration, answer)
        return answer

    def _remember(self, key: tuple[str, str], expires: float, value: dns.resolver.Answer | bool) -> None:
        if self._memo_size <= 0:
            return
        if len(self._memo) >= self._memo_size:
            self._memo.clear()
        self._memo[key] = (expires, value)

    async def _resolve(self, label: str, name: str | dns.name.Name, rdtype: str) -> dns.resolver.Answer:
        try:
            qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError) as exc:
            # A name that cannot be written in DNS cannot exist there.
            raise DNSNotFound(label, rdtype) from exc
        try:
            return await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DNSNotFound(label, rdtype, nxdomain=True) from exc
        except dns.resolver.NoAnswer as exc:
            raise DNSNotFound(label, rdtype, nxdomain=False) from exc
        except dns.resolver.YXDOMAIN as exc:
            raise DNSNotFound(label, rdtype) from exc
        except dns.resolver.NoNameservers as exc:
            raise DNSTempError(label, rdtype, "no name server answered (SERVFAIL or refused)") from exc
        except dns.exception.Timeout as exc:
            raise DNSTempError(label, rdtype, "timeout") from exc
        except dns.exception.DNSException as exc:
            raise DNSTempError(label, rdtype, type(exc).__name__) from exc

    async def txt(self, name: str) -> list[str]:
        answer = await self._query(name, "TXT")
        return [decode_txt(rdata.strings) for rdata in answer]

    async def a(self, name: str) -> list[str]:
        answer = await self._query(name, "A")
        return [rdata.address for rdata in answer]

    async def aaaa(self, name: str) -> list[str]:
        answer = await self._query(name, "AAAA")
        return [rdata.address for rdata in answer]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        answer = await self._query(name, "MX")
        return sorted((rdata.preference, rdata.exchange.to_text(omit_final_dot=True)) for rdata in answer)

    async def ptr(self, ip: str) -> list[str]:
        try:
            qname = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise DNSNotFound(ip, "PTR") from exc
        answer = await self._query(qname, "PTR")
        return [rdata.target.to_text(omit_final_dot=True) for rdata in answer]


def negative_ttl(exc: BaseException | None) -> float | None:
    """How long a negative answer may be kept: the SOA's TTL capped by its MINIMUM field (RFC 2308 §5);
    None when the answer carried no SOA (then it is not kept)."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        responses = list(exc.responses().values())
    elif isinstance(exc, dns.resolver.NoAnswer):
        responses = [exc.kwargs.get("response")]
    else:
        return None
    ttls = [min(rrset.ttl, rrset[0].minimum) for response in responses if response is not None
            for rrset in response.authority if rrset.rdtype == dns.rdatatype.SOA and len(rrset)]
    return float(min(ttls)) if ttls else None
