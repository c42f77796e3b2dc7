"""mailcore/auth/spf.py: our seams around pyspf (DNS through our resolver, off the loop, bounded)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailcore.auth.spf import SPFResult, check_helo, check_spf
from mailcore.dns import DNSLookup
from mailcore.dns.fake import FakeResolver
from tests.mailcore.conftest import resolver_for

ZONE = {
    "example.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 mx include:_spf.example.test -all", "unrelated"],
                     "MX": [(10, "mx.example.test.")]},
    "mx.example.test": {"A": ["198.51.100.7"]},
    "_spf.example.test": {"TXT": [["v=spf1 ip6:2001:db8::/32", " ~all"]]},
    "soft.example.test": {"TXT": ["v=spf1 ~all"]},
    "helo.example.test": {"TXT": ["v=spf1 a -all"], "A": ["203.0.113.5"]},
    "nospf.example.test": {"A": ["192.0.2.1"]},
    "loop.example.test": {"TXT": ["v=spf1 include:loop.example.test -all"]},
    "slow.example.test": {"TXT": ["v=spf1 a:down.example.test -all"]},
}


@pytest.mark.parametrize(("ip", "mail_from", "result"), [
    ("192.0.2.10", "alice@example.test", "pass"),
    ("198.51.100.7", "alice@example.test", "pass"),  # via mx
    ("2001:db8::25", "alice@example.test", "pass"),  # via include:
    ("203.0.113.9", "alice@example.test", "fail"),
    ("203.0.113.9", "bob@soft.example.test", "softfail"),
    ("203.0.113.9", "bob@nospf.example.test", "none"),
    ("203.0.113.9", "bob@nx.example.test", "none"),
    ("203.0.113.9", "bob@loop.example.test", "permerror"),
    ("203.0.113.9", "bob@slow.example.test", "temperror"),
])
async def test_results(ip: str, mail_from: str, result: str) -> None:
    resolver = FakeResolver(ZONE, timeout={"down.example.test"})
    got = await check_spf(resolver, ip, mail_from, "client.example.test")
    assert got.result == result
    assert got.identity == "mailfrom"
    assert got.domain == mail_from.split("@")[1]
    assert got.smtp_comment


async def test_fail_explanation_and_receiver_macro() -> None:
    resolver = FakeResolver({
        "example.test": {"TXT": ["v=spf1 -all exp=why.example.test"]},
        "why.example.test": {"TXT": ["%{i} may not send for %{d} (asked %{r})"]},
    })
    got = await check_spf(resolver, "192.0.2.9", "a@example.test", "h.test", receiver="mx.ours.test")
    assert got == SPFResult("fail", "example.test", "192.0.2.9 may not send for example.test "
                            "(asked mx.ours.test)", got.smtp_comment, "mailfrom")


async def test_null_sender_uses_helo_identity() -> None:
    resolver = FakeResolver(ZONE)
    got = await check_spf(resolver, "203.0.113.5", "", "helo.example.test")
    assert (got.result, got.identity, got.domain) == ("pass", "helo", "helo.example.test")
    got = await check_helo(resolver, "192.0.2.99", "helo.example.test")
    assert (got.result, got.identity) == ("fail", "helo")
    assert (await check_helo(resolver, "192.0.2.99", "[192.0.2.99]")).result == "none"


async def test_ten_lookup_limit_is_a_permerror() -> None:
    # RFC 7208 §4.6.4: more than 10 DNS-querying terms -> permerror
    records = {"many.example.test": {"TXT": [
        "v=spf1 " + " ".join(f"a:h{i}.example.test" for i in range(11)) + " -all"]}}
    records.update({f"h{i}.example.test": {"A": ["198.51.100.1"]} for i in range(11)})
    resolver = FakeResolver(records)
    assert (await check_spf(resolver, "192.0.2.1", "x@many.example.test", "h.test")).result == "permerror"
    assert len([q for q in resolver.queries if q[1] == "A"]) <= 10


class _Recording(FakeResolver):
    """Notes which thread each lookup ran on."""

    threads: set[int]

    async def txt(self, name: str) -> list[str]:
        self.threads.add(threading.get_ident())
        return await super().txt(name)


async def test_lookups_run_on_the_loop_thread_and_pyspf_does_not() -> None:
    resolver = _Recording(ZONE)
    resolver.threads = set()
    assert isinstance(resolver, DNSLookup)
    await check_spf(resolver, "192.0.2.10", "alice@example.test", "h.test")
    assert resolver.threads == {threading.get_ident()}


class _Hanging(FakeResolver):
    async def txt(self, name: str) -> list[str]:
        await asyncio.sleep(30)
        return []


async def test_a_hanging_resolver_gives_temperror_in_bounded_time() -> None:
    got = await asyncio.wait_for(
        check_spf(_Hanging(), "192.0.2.1", "a@example.test", "h.test", lookup_timeout=0.2), 5)
    assert got.result == "temperror"
    got = await asyncio.wait_for(
        check_spf(_Hanging(), "192.0.2.1", "a@example.test", "h.test", total_timeout=0.2), 5)
    assert got.result == "temperror"


async def test_end_to_end_over_loopback_dns(dns_server) -> None:
    server = dns_server(ZONE, drop={"down.example.test"})
    resolver = resolver_for(server, timeout=0.3)
    assert (await check_spf(resolver, "198.51.100.7", "a@example.test", "h.test")).result == "pass"
    assert (await check_spf(resolver, "203.0.113.1", "a@example.test", "h.test")).result == "fail"
    assert (await check_spf(resolver, "203.0.113.1", "a@slow.example.test", "h.test")).result == "temperror"


async def test_invalid_client_ip_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        await check_spf(FakeResolver(), "not-an-ip", "a@example.test", "h.test")


@pytest.mark.parametrize(("ip", "result"), [("192.0.2.44", "pass"), ("192.0.2.45", "fail")])
async def test_ptr_names_without_addresses_are_not_void_lookups(ip: str, result: str) -> None:
    """RFC 7208 §5.5: a PTR name whose A lookup finds nothing does not match; §4.6.4 counts void
    lookups per term, so stale PTR names before the good one must not make a permerror."""
    reverse = {f"{octet}.2.0.192.in-addr.arpa": {"PTR": [f"stale{i}.ptr.test" for i in range(3)]
                                                  + ["good.ptr.test"]} for octet in (44, 45)}
    resolver = FakeResolver({"ptr.test": {"TXT": ["v=spf1 ptr -all"]},
                             "good.ptr.test": {"A": ["192.0.2.44"]}, **reverse})
    assert (await check_spf(resolver, ip, "a@ptr.test", "h.test")).result == result


async def test_long_macro_expansion_is_truncated_from_the_left_to_253() -> None:
    """RFC 7208 §7.3: labels are removed from the left until the name fits in 253 characters."""
    local = "a" * 30
    fitted = ".".join([local] * 7 + ["x", "test"])  # 223 characters: three of the ten labels removed
    resolver = FakeResolver({"macro.test": {"TXT": ["v=spf1 exists:" + ".".join(["%{l}"] * 10) + ".x.test -all"]},
                             fitted: {"A": ["127.0.0.2"]}})
    result = await check_spf(resolver, "192.0.2.1", f"{local}@macro.test", "h.test")
    assert result.result == "pass"
    assert (fitted, "A") in resolver.queries
