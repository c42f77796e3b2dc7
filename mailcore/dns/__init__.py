"""DNS as the rest of mailcore sees it: one lookup interface, two outcomes besides an answer.

This package owns the `DNSLookup` protocol (what SPF, DKIM, DMARC, ARC and MX code may ask of DNS), the
errors that distinguish a definite negative from a failure to learn anything, the real resolver
(`mailcore.dns.resolver.Resolver`), a plain-data fake for unit tests (`mailcore.dns.fake.FakeResolver`) and
the bridge that lets synchronous libraries running in a worker thread use either (`mailcore.dns.bridge`).

It must not hold a process-wide resolver: whoever needs DNS is handed a `DNSLookup`.
Names returned (MX exchanges, PTR targets) carry no trailing dot.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import dns.exception
import dns.name


def ascii_name(name: str) -> str:
    """`name` as the resolver asks it: lower case, without its final dot, U-labels as A-labels (dnspython's
    IDNA encoding). Internationalised names meet A-label ones this way (RFC 8616: an RFC 6532 From names
    its domain in U-labels, DKIM's d= and SPF's domains are A-labels). A name that cannot be encoded is
    returned as it is (it cannot be found in DNS either)."""
    name = name.rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return dns.name.from_text(name).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return name

class DNSError(Exception):
    """A lookup gave no usable answer."""


class DNSNotFound(DNSError):
    """A definite negative: NXDOMAIN, or the name exists without records of that type (NODATA).

    Cacheable, and a permanent fact as far as the caller is concerned (RFC 2308)."""

    def __init__(self, name: str, rdtype: str, nxdomain: bool = True) -> None:
        super().__init__(f"{name} {rdtype}: {'no such domain' if nxdomain else 'no records'}")
        self.name = name
        self.rdtype = rdtype
        self.nxdomain = nxdomain


class DNSTempError(DNSError):
    """Nothing could be learnt right now: a timeout, SERVFAIL, no reachable name server."""

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"{name} {rdtype}: {reason}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


@runtime_checkable
class DNSLookup(Protocol):
    """The DNS questions mail authentication and delivery ask.

    Every method raises `DNSNotFound` for an empty answer (never returns an empty list) and
    `DNSTempError` when the answer could not be obtained."""

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        ...

    async def a(self, name: str) -> list[str]:
        """IPv4 addresses as text."""
        ...

    async def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses as text."""
        ...

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs sorted by preference."""
        ...

    async def ptr(self, ip: str) -> list[str]:
        """Names of the reverse-mapping PTR records of an IPv4 or IPv6 address."""
        ...


__all__ = ["DNSError", "DNSLookup", "DNSNotFound", "DNSTempError"]
