"""The client's host name for the Received field: reverse DNS, confirmed forward (FCrDNS).

RFC 5321 §4.4 lets the Received "from" clause carry the name the client's address resolves to beside
the address itself (`from helo (name [192.0.2.1])`): what Postfix shows, and what admins and spam
filters read. A PTR answer alone is the address owner's claim; the name counts only when it resolves
back to the address (forward-confirmed reverse DNS, as Postfix's `reverse_client_name` vs
`client_name`, and RFC 8601 §3's iprev). Otherwise the clause stays `([192.0.2.1])`.

Started when the connection opens (`lookup`), so it is done long before the first message needs it; bounded
in names tried and in time; a name that is not a plain host name (DNS can carry any byte in a label) is
never used. Must not: delay a message beyond `TIMEOUT` or fail it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.proxygate import parse_ip

TIMEOUT = 5.0  # seconds for the whole look-up (PTR, then A/AAAA of each name)
MAX_NAMES = 10  # PTR names tried, as RFC 7208 §5.5 bounds its ptr mechanism
# A host name: dot-separated labels of letters, digits, hyphens (and the underscores real PTRs carry),
# none starting or ending with a hyphen, at most 63 octets each and 253 in all.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z)(?:{_LABEL}\.)+{_LABEL}\Z", re.ASCII)


def host_name(name: str) -> bool:
    """Whether `name` (a PTR target as text, no final dot) is a plain host name we may write into a header."""
    return bool(_HOSTNAME.match(name))


async def confirmed_name(resolver: DNSLookup, ip: str) -> str | None:
    """The first PTR name of `ip` whose own addresses include `ip` (lower case), or None: no PTR, none
    confirmed, a DNS failure, or more than `TIMEOUT` seconds."""
    address = parse_ip(ip)
    if address is None:
        return None
    try:
        async with asyncio.timeout(TIMEOUT):
            names = await resolver.ptr(str(address))
            for name in names[:MAX_NAMES]:
                if host_name(name) and await _resolves_to(resolver, name, address):
                    return name.lower()
    except (DNSNotFound, DNSTempError, TimeoutError):
        pass
    return None


async def _resolves_to(resolver: DNSLookup, name: str,
                       address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    lookup = resolver.a if address.version == 4 else resolver.aaaa
    try:
        found = await lookup(name)
    except DNSNotFound:
        return False
    return any(_same(text, address) for text in found)


def _same(text: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:
        return False


def lookup(resolver: DNSLookup | None, ip: str) -> asyncio.Task[str | None] | None:
    """Start `confirmed_name` for a new connection (None without a resolver)."""
    if resolver is None or not ip:
        return None
    return asyncio.get_running_loop().create_task(confirmed_name(resolver, ip), name="fcrdns")
