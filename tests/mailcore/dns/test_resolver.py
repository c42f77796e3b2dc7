"""mailcore/dns/resolver.py against a real DNS server on loopback (tests/dnsserver.py)."""

from __future__ import annotations

import asyncio

import dns.message
import dns.name
import dns.resolver
import pytest

from config.settings import DNSSettings
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dns.resolver import FALLBACK_NAMESERVER, Resolver, decode_txt, negative_ttl
from tests.mailcore.conftest import resolver_for

ZONE = {
    "example.test": {
        "TXT": ["v=spf1 -all", ["v=DKIM1; p=", "abc"]],
        "A": ["192.0.2.1", "192.0.2.2"],
        "AAAA": ["2001:db8::1"],
        "MX": [(20, "mx2.example.test."), (10, "mx1.example.test.")],
    },
    "big.example.test": {"TXT": ["k" * 1500]},
    "alias.example.test": {"CNAME": "example.test."},
    "empty.example.test": {"A": ["192.0.2.9"]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["mail.example.test."]},
}


async def test_answers(dns_server) -> None:
    resolver = resolver_for(dns_server(ZONE))
    assert isinstance(resolver, DNSLookup)
    assert await resolver.txt("example.test") == ["v=spf1 -all", "v=DKIM1; p=abc"]
    assert await resolver.a("example.test.") == ["192.0.2.1", "192.0.2.2"]
    assert await resolver.aaaa("example.test") == ["2001:db8::1"]
    assert await resolver.mx("example.test") == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert await resolver.a("alias.example.test") == ["192.0.2.1", "192.0.2.2"]
    assert await resolver.ptr("192.0.2.1") == ["mail.example.test"]


async def test_truncated_udp_answer_is_retried_over_tcp(dns_server) -> None:
    server = dns_server(ZONE)
    assert await resolver_for(server).txt("big.example.test") == ["k" * 1500]
    assert [q[2] for q in server.queries] == ["udp", "tcp"]


async def test_nxdomain_and_nodata_are_not_found(dns_server) -> None:
    resolver = resolver_for(dns_server(ZONE))
    with pytest.raises(DNSNotFound) as nx:
        await resolver.txt("missing.example.test")
    assert nx.value.nxdomain
    with pytest.raises(DNSNotFound) as nodata:
        await resolver.txt("empty.example.test")
    assert not nodata.value.nxdomain
    with pytest.raises(DNSNotFound):
        await resolver.ptr("192.0.2.77")
    with pytest.raises(DNSNotFound):
        await resolver.a("bad..name.test")
    with pytest.raises(DNSNotFound):
        await resolver.ptr("not-an-ip")


async def test_negative_answers_are_cached(dns_server) -> None:
    server = dns_server(ZONE)
    resolver = resolver_for(server)
    for _ in range(3):
        with pytest.raises(DNSNotFound):
            await resolver.txt("missing.example.test")
        with pytest.raises(DNSNotFound):
            await resolver.txt("empty.example.test")
    assert len(server.queries) == 2


async def test_cache_size_zero_disables_the_cache(dns_server) -> None:
    server = dns_server(ZONE)
    resolver = resolver_for(server, cache_size=0)
    for _ in range(2):
        await resolver.a("example.test")
    assert len(server.queries) == 2


async def test_servfail_is_a_temporary_error(dns_server) -> None:
    resolver = resolver_for(dns_server(ZONE, servfail={"broken.example.test"}))
    with pytest.raises(DNSTempError):
        await resolver.txt("broken.example.test")


async def test_no_answer_is_a_temporary_error_within_the_timeout(dns_server) -> None:
    resolver = resolver_for(dns_server(ZONE, drop={"slow.example.test"}), timeout=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    # The server never answers: only the resolver's own timeout ends the lookup, as DNSTempError. Were it
    # ignored, the 10 s guard would raise TimeoutError instead (a hang guard: it times nothing).
    with pytest.raises(DNSTempError):
        async with asyncio.timeout(10):
            await resolver.a("slow.example.test")
    ticker.cancel()
    assert ticks >= 10, "the event loop was blocked during the lookup"


async def test_unreachable_server_is_a_temporary_error(dns_server) -> None:
    server = dns_server(ZONE)
    port = server.port
    server.stop()
    resolver = Resolver(DNSSettings(nameservers=["127.0.0.1"], port=port, timeout=0.3))
    with pytest.raises(DNSTempError):
        await resolver.a("example.test")


def test_missing_or_empty_resolv_conf_falls_back_to_loopback(tmp_path) -> None:
    assert Resolver(DNSSettings(), resolv_conf=str(tmp_path / "absent")).nameservers == [FALLBACK_NAMESERVER]
    empty = tmp_path / "resolv.conf"
    empty.write_text("# nothing\n")
    assert Resolver(DNSSettings(), resolv_conf=str(empty)).nameservers == [FALLBACK_NAMESERVER]
    conf = tmp_path / "resolv2.conf"
    conf.write_text("nameserver 192.0.2.53\n")
    assert Resolver(DNSSettings(), resolv_conf=str(conf)).nameservers == ["192.0.2.53"]
    assert Resolver(DNSSettings(nameservers=["192.0.2.54"])).nameservers == ["192.0.2.54"]


@pytest.mark.parametrize(("strings", "text"), [
    ([b"v=spf1 ", b"-all"], "v=spf1 -all"),
    ([b"caf\xc3\xa9"], "café"),
    ([b"\x96bad"], "\x96bad"),
    ([], ""),
])
def test_decode_txt_never_fails(strings, text) -> None:
    assert decode_txt(strings) == text


async def test_repeated_answers_keep_their_kind(dns_server) -> None:
    """Answers served again from the memo in front of dnspython are the same as the first time:
    records, NXDOMAIN vs NODATA, and a temporary error is never kept."""
    server = dns_server(ZONE, servfail={"broken.example.test"})
    resolver = resolver_for(server)
    for _ in range(3):
        assert await resolver.txt("example.test") == ["v=spf1 -all", "v=DKIM1; p=abc"]
        with pytest.raises(DNSNotFound) as nx:
            await resolver.txt("missing.example.test")
        assert nx.value.nxdomain and nx.value.name == "missing.example.test"
        with pytest.raises(DNSNotFound) as nodata:
            await resolver.txt("empty.example.test")
        assert not nodata.value.nxdomain
        with pytest.raises(DNSTempError):
            await resolver.txt("broken.example.test")
    asked = [q[0].rstrip(".") for q in server.queries]
    assert sorted(set(asked)) == ["broken.example.test", "empty.example.test", "example.test",
                                  "missing.example.test"]
    assert asked.count("example.test") == asked.count("missing.example.test") == 1
    assert asked.count("broken.example.test") >= 3


def _negative(rcode: str, authority: str) -> dns.resolver.NoAnswer | dns.resolver.NXDOMAIN:
    qname = dns.name.from_text("missing.example.test")
    response = dns.message.from_text(
        f"id 1\nopcode QUERY\nrcode {rcode}\nflags QR AA RD RA\n;QUESTION\nmissing.example.test. IN TXT\n"
        f";ANSWER\n;AUTHORITY\n{authority}\n")
    if rcode == "NXDOMAIN":
        return dns.resolver.NXDOMAIN(qnames=[qname], responses={qname: response})
    return dns.resolver.NoAnswer(response=response)


@pytest.mark.parametrize(("rcode", "authority", "ttl"), [
    # RFC 2308 §5: the SOA record's TTL, capped by its MINIMUM field
    ("NXDOMAIN", "test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60", 60.0),
    ("NXDOMAIN", "test. 30 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60", 30.0),
    ("NOERROR", "test. 0 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60", 0.0),
    ("NXDOMAIN", "", None),  # no SOA: not kept by the memo
])
def testnegative_ttl(rcode: str, authority: str, ttl: float | None) -> None:
    assert negative_ttl(_negative(rcode, authority)) == ttl
