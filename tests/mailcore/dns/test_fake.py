"""mailcore/dns/fake.py behaves like the real resolver for the same data."""

from __future__ import annotations

import pytest

from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dns.fake import FakeResolver
from tests.mailcore.conftest import resolver_for

ZONE = {
    "example.test": {"TXT": ["v=spf1 -all", ["a", "b"]], "A": ["192.0.2.1"], "AAAA": ["2001:DB8::1"],
                     "MX": [(20, "b.example.test."), (10, "a.example.test.")]},
    "alias.example.test": {"CNAME": "example.test."},
    "loop1.example.test": {"CNAME": "loop2.example.test"},
    "loop2.example.test": {"CNAME": "loop1.example.test"},
    "1.2.0.192.in-addr.arpa": {"PTR": ["mail.example.test."]},
    "half.example.test": {"TXT": ["ok"]},
    "xn--bcher-kva.example.test": {"TXT": ["idn"]},
}


async def _outcomes(resolver: DNSLookup) -> list[object]:
    out: list[object] = []
    calls = [("txt", "example.test"), ("a", "Example.Test."), ("aaaa", "example.test"),
             ("mx", "example.test"), ("a", "alias.example.test"), ("ptr", "192.0.2.1"),
             ("txt", "nx.example.test"), ("mx", "alias.example.test"), ("a", "broken.example.test"),
             ("txt", "Bücher.example.test")]  # the real resolver asks for the A-label
    for method, name in calls:
        try:
            out.append(await getattr(resolver, method)(name))
        except DNSNotFound as exc:
            out.append(("notfound", exc.nxdomain))
        except DNSTempError:
            out.append("temperror")
    return out


async def test_fake_and_real_agree(dns_server) -> None:
    fake = FakeResolver(ZONE, fail={"broken.example.test"})
    real = resolver_for(dns_server(ZONE, servfail={"broken.example.test"}))
    assert isinstance(fake, DNSLookup)
    assert await _outcomes(fake) == await _outcomes(real)


async def test_failures_by_name_and_type() -> None:
    fake = FakeResolver(ZONE, timeout={("half.example.test", "A")}, fail={"example.test"})
    assert await fake.txt("half.example.test") == ["ok"]
    with pytest.raises(DNSTempError):
        await fake.a("half.example.test")
    with pytest.raises(DNSTempError):
        await fake.a("alias.example.test")  # the CNAME target fails
    with pytest.raises(DNSTempError):
        await fake.a("loop1.example.test")
    assert fake.queries[0] == ("half.example.test", "TXT")
