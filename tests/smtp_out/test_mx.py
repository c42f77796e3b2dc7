"""Routing by MX through the loopback DNS server: preference order, fallback, implicit MX, null MX."""

from __future__ import annotations

import random
from collections.abc import Iterator

import asyncpg
import pytest

from config.settings import DNSSettings
from mailcore.dns.fake import FakeResolver
from mailcore.dns.resolver import Resolver
from smtp_out.routing import RouteError, order_mx, route
from tests.dnsserver import DNSTestServer
from tests.smtp_out.conftest import Clock, inbox, outbound, settings, submit

# 127.0.0.2 is loopback too, but no sink listens there: connections to it are refused.
DEAD = "127.0.0.2"
LIVE = "127.0.0.1"


@pytest.fixture
def dns() -> Iterator[DNSTestServer]:
    server = DNSTestServer({
        "two.test": {"MX": [(10, "mx1.two.test."), (20, "mx2.two.test.")]},
        "mx1.two.test": {"A": [DEAD]},
        "mx2.two.test": {"A": [LIVE]},
        "plain.test": {"A": [LIVE]},  # no MX: the implicit MX
        "nomail.test": {"MX": [(0, ".")], "A": [LIVE]},
        "gone.test": {"MX": [(10, "mx.nowhere.test.")]},
    }).start()
    yield server
    server.stop()


def _resolver(server: DNSTestServer) -> Resolver:
    return Resolver(DNSSettings(nameservers=[server.host], port=server.port, timeout=1.0, cache_size=0))


async def test_falls_back_to_the_second_mx(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                           dns: DNSTestServer) -> None:
    sink = await sinks()
    await submit(pool, "r@two.test")
    ob = outbound(pool, clock, _resolver(dns), mx_port=sink.port)
    assert await ob.run_once() == 1
    assert sink.recipients == ["r@two.test"]
    asked = [(n, t) for n, t, _ in dns.queries]
    assert asked.index(("mx1.two.test", "A")) < asked.index(("mx2.two.test", "A"))


async def test_implicit_mx(pool: asyncpg.Pool, ours: int, sinks, clock: Clock, dns: DNSTestServer) -> None:
    sink = await sinks()
    await submit(pool, "r@plain.test")
    assert await outbound(pool, clock, _resolver(dns), mx_port=sink.port).run_once() == 1
    assert sink.recipients == ["r@plain.test"]


async def test_null_mx_bounces_at_once(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                       dns: DNSTestServer) -> None:
    sink = await sinks()
    await submit(pool, "r@nomail.test")
    assert await outbound(pool, clock, _resolver(dns), mx_port=sink.port).run_once() == 1
    assert sink.connections == 0
    (raw,) = await inbox(pool)
    assert b"Status: 5.1.10" in raw and b"null MX" in raw
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_nxdomain_bounces_and_unresolvable_mx_defers(pool: asyncpg.Pool, ours: int, clock: Clock,
                                                           dns: DNSTestServer) -> None:
    await submit(pool, "r@nonexistent.test")
    qid = await submit(pool, "r@gone.test")
    assert await outbound(pool, clock, _resolver(dns)).run_once() == 2
    (raw,) = await inbox(pool)
    assert b"Final-Recipient: rfc822;r@nonexistent.test" in raw and b"Status: 5.1.2" in raw
    row = await pool.fetchrow("SELECT status, status_code FROM queue_recipients WHERE queue_id=$1", qid)
    assert tuple(row) == ("deferred", "4.4.3")


async def test_dns_failure_defers() -> None:
    fake = FakeResolver(fail={"broken.test"})
    with pytest.raises(RouteError) as err:
        await route("broken.test", settings().queue, fake)
    assert not err.value.permanent and err.value.status == "4.4.3"


async def test_transport_wins_over_mx_and_star_is_the_smarthost() -> None:
    qs = settings(transports={"a.test": "smtp://10.0.0.1:2525", "*": "smtps://u:p%40ss@relay.test"}).queue
    (hop,) = await route("a.test", qs, None)
    assert (hop.name, hop.port, hop.tls) == ("10.0.0.1", 2525, "opportunistic")
    (hop,) = await route("b.test", qs, None)
    assert (hop.name, hop.port, hop.tls, hop.username, hop.password) == ("relay.test", 465, "implicit", "u", "p@ss")


def test_equal_preferences_are_shuffled_lower_first() -> None:
    records = [(20, "c.test"), (10, "a.test"), (10, "b.test"), (30, "d.test")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(40)}
    assert orders == {("a.test", "b.test", "c.test", "d.test"), ("b.test", "a.test", "c.test", "d.test")}
