"""SPF (RFC 7208): is this client IP allowed to send for the MAIL FROM (or HELO) domain?

pyspf does the evaluation (record parsing, macros, mechanisms, the 10-lookup and 2-void-lookup limits of
RFC 7208 §4.6.4). This module owns only the seams around it: pyspf runs in a worker thread and every DNS
question it asks goes through our async `DNSLookup` on the event loop (`mailcore.dns.bridge`), by
overriding `query.dns` on a subclass, never by replacing pyspf's module-level `DNSLookup`. The first
question (the domain's TXT records) is asked on the loop before that; when the domain publishes no SPF
record, pyspf's "none" comes from that cached answer on the loop, without the thread.

It must not block the event loop, must not touch real DNS on its own, and must not decide what a result
does to a message (that is `mailcore.auth.check`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import dns.exception
import dns.name
import dns.reversename
import spf as pyspf

from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dns.bridge import LoopBridge

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

# RFC 7208 §4.6.4: "a period of at least 20 seconds" for the whole evaluation is a SHOULD.
DEFAULT_TOTAL_TIMEOUT = 20.0
# A single DNS answer through the bridge; the resolver's own timeout is normally shorter.
DEFAULT_LOOKUP_TIMEOUT = 10.0

_OLD_NAMES = MappingProxyType({"unknown": "permerror", "error": "temperror"})


@dataclass(frozen=True)
class SPFResult:
    """The outcome of one SPF check_host() evaluation.

    `domain` is the domain whose policy was evaluated (MAIL FROM's domain, or the HELO name);
    `explanation` is the domain's explanation for a `fail` (RFC 7208 §6.2), else empty;
    `smtp_comment` is a one-line human description for logs and header comments."""

    result: str
    domain: str
    explanation: str = ""
    smtp_comment: str = ""
    identity: str = "mailfrom"  # or "helo" (RFC 7208 §2.3, §2.4)


class _Query(pyspf.query):
    """A pyspf query whose DNS goes through a `LoopBridge` to our resolver."""

    def __init__(self, bridge: LoopBridge, resolver: DNSLookup, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bridge = bridge
        self._resolver = resolver

    def _ask(self, name: str, qtype: str) -> list[Any]:
        resolver = self._resolver
        if qtype == "TXT":
            make = functools.partial(resolver.txt, name)
        elif qtype == "A":
            make = functools.partial(resolver.a, name)
        elif qtype == "AAAA":
            make = functools.partial(resolver.aaaa, name)
        elif qtype == "MX":
            make = functools.partial(resolver.mx, name)
        elif qtype == "PTR":
            try:
                ip = dns.reversename.to_address(dns.name.from_text(name))
            except (dns.exception.DNSException, ValueError):
                return []
            make = functools.partial(resolver.ptr, ip)
        else:
            # RFC 7208 §3.1: the SPF RR type is not queried any more.
            return []
        try:
            answers = self._bridge.call(make, f"{name} {qtype}")
        except DNSNotFound:
            return []
        except DNSTempError as exc:
            # RFC 7208 §5: a DNS error other than "no such name" is a temperror.
            raise pyspf.TempError(f"DNS {exc}") from exc
        if qtype == "TXT":
            # pyspf wants each record as a list of byte strings; it checks for non-ASCII itself
            # (RFC 7208 §3.5 -> permerror).
            return [[text.encode("utf-8")] for text in answers]
        return answers

    def validated_ptrs(self) -> list[str]:
        # RFC 7208 §5.5: a DNS error on the PTR lookup makes the mechanism not match, and one on the
        # A/AAAA lookup of a PTR name skips that name. pyspf lets both become temperror; a recursive
        # resolver reports a CNAME loop as SERVFAIL, so this matters in practice.
        try:
            names = self.dns_ptr(self.i)[:pyspf.MAX_PTR]
        except pyspf.TempError:
            return []
        # The A/AAAA lookups of the PTR names are not void lookups of their own: the limit counts terms
        # (RFC 7208 §4.6.4), and the ptr term's lookup is the PTR one. pyspf counted each name without
        # an address, so a host with three stale PTR names was a permerror instead of a pass.
        validated = []
        for name in names:
            try:
                addresses = self.dns(name, self.A, ignore_void=True)
            except pyspf.TempError:
                continue
            if self.cidrmatch(addresses, self.cidrmax):
                validated.append(name)
        return validated

    def dns(self, name: Any, qtype: str, cnames: Any = None, ignore_void: bool = False) -> list[Any]:
        # Replaces pyspf's query.dns (which calls the module global DNSLookup); CNAMEs are followed by
        # the resolver. Void lookups are counted as pyspf does (RFC 7208 §4.6.4).
        if not name:
            raise pyspf.PermError("Invalid query: empty name")
        name = str(name).rstrip(".").lower()
        # RFC 7208 §7.3: a macro expansion over 253 characters loses labels from the left "until the
        # total length does not exceed 253"; pyspf removes only one, and a longer name was a void lookup.
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key in self.cache:
            result = self.cache[key]
        else:
            result = self._ask(name, qtype)
            self.cache[key] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _run(query: _Query) -> tuple[str, str]:
    result, _code, explanation = query.check()
    result = _OLD_NAMES.get(result, result)
    if result not in RESULTS:  # "ambiguous" exists only in pyspf's harsh mode, which we do not use
        result = "permerror"
    return result, explanation


async def _first_lookup(query: _Query, resolver: DNSLookup, lookup_timeout: float) -> str | None:
    """Ask for the TXT records of the domain pyspf evaluates first, on the loop, and cache the answer
    where `_Query.dns` looks. "none" when none of them is an SPF record: pyspf then returns none without
    another lookup (RFC 7208 §4.5); "temperror" when the lookup failed so (RFC 7208 §4.4); None for
    anything else (a record to evaluate, a name pyspf treats specially): evaluate in a worker thread."""
    raw = str(query.d)
    if not raw or not all(0 < len(label) < 64 for label in raw.split(".")):
        return None
    name = raw.rstrip(".").lower()
    try:
        async with asyncio.timeout(lookup_timeout):
            answers = await resolver.txt(name)
    except DNSNotFound:
        answers = []
    except (DNSTempError, TimeoutError):
        return "temperror"
    records = [[text.encode("utf-8")] for text in answers]
    query.cache[(name, "TXT")] = records
    return None if any(pyspf.RE_SPF.match(r[0]) for r in records) else "none"


async def _check(resolver: DNSLookup, ip: str, sender: str, helo: str, identity: str, receiver: str,
                 default_explanation: str | None, lookup_timeout: float,
                 total_timeout: float) -> SPFResult:
    ip = str(ipaddress.ip_address(ip))  # ValueError for a non-address (pyspf also accepts "list")
    bridge = LoopBridge(lookup_timeout)
    query = _Query(bridge, resolver, i=ip, s=sender, h=helo, receiver=receiver, strict=True)
    if default_explanation is not None:
        query.set_default_explanation(default_explanation)
    domain = query.d
    try:
        async with asyncio.timeout(total_timeout):
            first = await _first_lookup(query, resolver, lookup_timeout)
            if first == "temperror":  # what pyspf makes of a DNS error on its first lookup
                result, explanation = "temperror", ""
            elif first == "none":
                # pyspf's answer is "none" from the cached TXT answer alone: evaluate it here (tens of
                # microseconds) rather than through a worker thread and the bridge. A DNS question now
                # would be a bug: the closed bridge fails it at once instead of blocking the loop.
                bridge.closed = True
                result, explanation = _run(query)
            else:
                result, explanation = await bridge.run(_run, query)
    except TimeoutError:
        return SPFResult("temperror", domain, "", "SPF evaluation took too long", identity)
    comment = query.get_header_comment(result)
    return SPFResult(result, domain, explanation if result == "fail" else "", comment, identity)


async def check_spf(resolver: DNSLookup, ip: str, mail_from: str, helo: str, *, receiver: str = "unknown",
                    default_explanation: str | None = None,
                    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
                    total_timeout: float = DEFAULT_TOTAL_TIMEOUT) -> SPFResult:
    """Evaluate SPF for the MAIL FROM identity (RFC 7208 §2.4).

    `mail_from` is the bare reverse-path address; when it is empty (a bounce) the identity is
    postmaster@<helo> (RFC 7208 §2.4) and the result's `identity` is "helo". `receiver` is our host
    name (the %{r} macro). Raises ValueError for an `ip` that is not an IP address."""
    identity = "mailfrom" if mail_from else "helo"
    return await _check(resolver, ip, mail_from, helo, identity, receiver, default_explanation,
                        lookup_timeout, total_timeout)


async def check_helo(resolver: DNSLookup, ip: str, helo: str, *, receiver: str = "unknown",
                     lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
                     total_timeout: float = DEFAULT_TOTAL_TIMEOUT) -> SPFResult:
    """Evaluate SPF for the HELO identity (RFC 7208 §2.3): postmaster@<helo>.

    An address literal or a name that is not a domain gives "none" (RFC 7208 §4.3)."""
    return await _check(resolver, ip, "", helo, "helo", receiver, None, lookup_timeout, total_timeout)
