"""The client's name in Received: reverse DNS confirmed forward, from a real DNS server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from config.settings import DNSSettings
from mailcore.dns.resolver import Resolver
from smtp_in import clientname
from tests.dnsserver import DNSTestServer
from tests.smtp_in.harness import USER, make_settings, start_server
from tests.smtp_in.test_mx import MSG, inbox, mx_client

REVERSE = "1.0.0.127.in-addr.arpa"  # the test client's address, 127.0.0.1 (RFC 6761 §6.3)
RECEIVED = b"Received: from client.remote.example ("


@pytest.mark.parametrize(("zone", "tcp_info"), [
    # confirmed: the name resolves back to the address (lower-cased for the header)
    ({REVERSE: {"PTR": ["Client.Example.TEST."]}, "client.example.test": {"A": ["127.0.0.1"]}},
     b"client.example.test [127.0.0.1]"),
    # the first name is not confirmed, the second is
    ({REVERSE: {"PTR": ["liar.example.test.", "real.example.test."]},
      "liar.example.test": {"A": ["192.0.2.9"]}, "real.example.test": {"A": ["192.0.2.9", "127.0.0.1"]}},
     b"real.example.test [127.0.0.1]"),
    # a PTR claim alone is not a name: it must resolve back
    ({REVERSE: {"PTR": ["liar.example.test."]}, "liar.example.test": {"A": ["192.0.2.9"]}}, b"[127.0.0.1]"),
    ({REVERSE: {"PTR": ["nowhere.example.test."]}}, b"[127.0.0.1]"),
    ({}, b"[127.0.0.1]"),  # no PTR at all
    # DNS carries any octet in a label: what is not a host name never reaches the header, resolvable or not
    ({REVERSE: {"PTR": ["evil) (x.example.test."]}, "evil) (x.example.test": {"A": ["127.0.0.1"]}},
     b"[127.0.0.1]"),
    ({REVERSE: {"PTR": ["-bad-.example.test."]}, "-bad-.example.test": {"A": ["127.0.0.1"]}}, b"[127.0.0.1]"),
])
async def test_received_names_the_client_only_when_confirmed(pool: asyncpg.Pool, accounts_ids: object,
                                                             tmp_path: Path, zone: dict, tcp_info: bytes) -> None:
    with DNSTestServer(zone) as dns:
        stored = await _one_message(pool, tmp_path, dns)
    assert RECEIVED + tcp_info + b")\r\n" in stored


async def _one_message(pool: asyncpg.Pool, tmp_path: Path, dns: DNSTestServer) -> bytes:
    """Send one message to the MX, whose resolver asks `dns` (0.5 s timeout); the message as stored."""
    resolver = Resolver(DNSSettings(nameservers=[dns.host], port=dns.port, timeout=0.5))
    server = await start_server(pool, make_settings(tmp_path), None, resolver=resolver)
    try:
        client = await mx_client(server)
        async with asyncio.timeout(10):
            errors, _ = await client.sendmail("a@remote.example", [USER], MSG)
        await client.quit()
    finally:
        await server.stop()
    assert errors == {}
    (stored,) = await inbox(pool, USER)
    return stored


@pytest.mark.parametrize("trouble", ["servfail", "drop"])
async def test_dns_trouble_costs_the_name_never_the_message(pool: asyncpg.Pool, accounts_ids: object,
                                                           tmp_path: Path, trouble: str) -> None:
    """A failing or silent resolver: the message is accepted, without a name, once the resolver
    gives up (its timeout, 0.5 s here)."""
    with DNSTestServer({}, **{trouble: {REVERSE}}) as dns:
        stored = await _one_message(pool, tmp_path, dns)
    assert RECEIVED + b"[127.0.0.1])\r\n" in stored


async def test_ipv4_mapped_and_odd_addresses() -> None:
    """A dual-stack listener sees ::ffff:a.b.c.d; the look-up is for a.b.c.d. Text that is not an
    address is no name, and no question to the resolver."""
    zone = {REVERSE: {"PTR": ["mapped.example.test."]}, "mapped.example.test": {"A": ["127.0.0.1"]}}
    with DNSTestServer(zone) as dns:
        resolver = Resolver(DNSSettings(nameservers=[dns.host], port=dns.port, timeout=0.5))
        assert await clientname.confirmed_name(resolver, "::ffff:127.0.0.1") == "mapped.example.test"
        assert await clientname.confirmed_name(resolver, "not an address") is None
        assert await clientname.confirmed_name(resolver, "") is None


@pytest.mark.parametrize(("name", "ok"), [
    ("mail.example.test", True), ("a_b.example.test", True), ("x" * 63 + ".test", True),
    ("localhost", False), ("x" * 64 + ".test", False), ("a..b.test", False), ("-a.test", False),
    ("a-.test", False), ("a b.test", False), ("a\\032b.test", False), ("caf\u00e9.test", False),
    ("a.test.", False), (("a." * 127) + "test", False),
])
def test_host_name(name: str, ok: bool) -> None:
    assert clientname.host_name(name) is ok
