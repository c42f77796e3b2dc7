"""A resolver made of plain data, for unit tests (after mox's `MockResolver`).

It owns nothing but the dictionary it is given: no sockets, no clock. It follows CNAMEs like a recursive
resolver would and reports a loop as a temporary failure (RFC 1034 §3.6.2: a loop is an error, and a
recursive server answers SERVFAIL). It must stay behaviourally equivalent to `Resolver` for the
interface `DNSLookup` (same exceptions, same name normalisation).

    FakeResolver(records={"example.test": {"TXT": ["v=spf1 -all"], "A": ["192.0.2.1"],
                                           "MX": [(10, "mx.example.test.")]}},
                 fail={"broken.test"}, timeout={"slow.test", ("half.test", "A")})

`fail` and `timeout` hold names (every type fails) or (name, type) pairs. A TXT record may be a string
or a list of character-strings (joined, as on the wire).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import dns.exception
import dns.name
import dns.reversename

from mailcore.dns import DNSNotFound, DNSTempError, ascii_name

MAX_CNAME_CHAIN = 16


def _keys(entries: Iterable[str | tuple[str, str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for entry in entries:
        if isinstance(entry, tuple):
            out.add((ascii_name(entry[0]), entry[1].upper()))
        else:
            out.add((ascii_name(entry), "*"))
    return out


class FakeResolver:
    """`DNSLookup` over a dictionary of records."""

    def __init__(self, records: Mapping[str, Mapping[str, Any]] | None = None,
                 fail: Iterable[str | tuple[str, str]] = (),
                 timeout: Iterable[str | tuple[str, str]] = ()) -> None:
        self.records: dict[str, dict[str, Any]] = {
            ascii_name(name): {rtype.upper(): value for rtype, value in rrs.items()}
            for name, rrs in (records or {}).items()
        }
        self.fail = _keys(fail)
        self.timeout = _keys(timeout)
        #: Every (name, type) asked, in order: lets tests count lookups.
        self.queries: list[tuple[str, str]] = []

    def _failure(self, name: str, rdtype: str) -> str | None:
        for kind, keys in (("SERVFAIL", self.fail), ("timeout", self.timeout)):
            if (name, "*") in keys or (name, rdtype) in keys:
                return kind
        return None

    def _lookup(self, name: str, rdtype: str) -> list[Any]:
        label = name
        name = ascii_name(name)
        self.queries.append((name, rdtype))
        seen: set[str] = set()
        while True:
            failure = self._failure(name, rdtype)
            if failure:
                raise DNSTempError(label, rdtype, failure)
            rrs = self.records.get(name)
            if rrs is None:
                raise DNSNotFound(label, rdtype, nxdomain=True)
            values = rrs.get(rdtype)
            if values:
                return list(values) if isinstance(values, list | tuple) and rdtype != "CNAME" else [values]
            target = rrs.get("CNAME")
            if not target:
                raise DNSNotFound(label, rdtype, nxdomain=False)
            if isinstance(target, list | tuple):
                target = target[0]
            seen.add(name)
            name = ascii_name(target)
            if name in seen or len(seen) > MAX_CNAME_CHAIN:
                raise DNSTempError(label, rdtype, "CNAME loop")

    async def txt(self, name: str) -> list[str]:
        return ["".join(v) if isinstance(v, list | tuple) else str(v) for v in self._lookup(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._lookup(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(ipaddress.IPv6Address(v)) for v in self._lookup(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted((int(pref), ascii_name(host)) for pref, host in self._lookup(name, "MX"))

    async def ptr(self, ip: str) -> list[str]:
        try:
            rname = dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()
        except ValueError as exc:
            raise DNSNotFound(ip, "PTR") from exc
        return [ascii_name(v) for v in self._lookup(rname, "PTR")]
