"""TLS outcomes per recipient domain (RFC 8460 §4.3 result types), recorded in `tls_outcomes` for
TLS-RPT: real deliveries to a loopback sink found through the loopback DNS server's MX, with STARTTLS
certificates from trustme, MTA-STS policies from a loopback HTTPS server."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import trustme

from config.settings import DNSSettings
from mailcore.dns.resolver import Resolver
from storage import tlsoutcomes
from tests.dnsserver import DNSTestServer
from tests.smtp_out.conftest import Clock, outbound, submit
from tests.smtp_out.test_mtasts import ENFORCE, PolicyServer

OTHER_CA = trustme.CA()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _tls(ca: trustme.CA, cert: str | None) -> ssl.SSLContext | None:
    """The sink's STARTTLS: none, or a certificate for mx.far.test that is good, for another name, from
    a CA we do not trust, or expired."""
    if cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    now = dt.datetime.now(dt.UTC)
    if cert == "good":
        leaf = ca.issue_cert("mx.far.test")
    elif cert == "other-name":
        leaf = ca.issue_cert("other.test")
    elif cert == "untrusted":
        leaf = OTHER_CA.issue_cert("mx.far.test")
    else:
        leaf = ca.issue_cert("mx.far.test", not_before=now - dt.timedelta(days=3),
                             not_after=now - dt.timedelta(days=1))
    leaf.configure_cert(ctx)
    return ctx


@pytest.fixture
async def policy_server(ca: trustme.CA) -> AsyncIterator[PolicyServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mta-sts.far.test").configure_cert(ctx)
    server = await PolicyServer(ctx, body=ENFORCE).start()
    yield server
    await server.stop()


# (case, sink certificate, the domain publishes an enforced MTA-STS policy, far.test in
#  queue.require_tls, expected (policy type, result type))
CASES = [
    ("opportunistic-tls", "good", False, False, ("no-policy-found", "success")),
    ("opportunistic-any-certificate", "untrusted", False, False, ("no-policy-found", "success")),
    ("no-starttls", None, False, False, ("no-policy-found", "starttls-not-supported")),
    ("required-verified", "good", False, True, ("no-policy-found", "success")),
    ("host-mismatch", "other-name", False, True, ("no-policy-found", "certificate-host-mismatch")),
    ("not-trusted", "untrusted", False, True, ("no-policy-found", "certificate-not-trusted")),
    ("expired", "expired", False, True, ("no-policy-found", "certificate-expired")),
    ("sts-verified", "good", True, False, ("sts", "success")),
    ("sts-no-starttls", None, True, False, ("sts", "starttls-not-supported")),
    ("sts-host-mismatch", "other-name", True, False, ("sts", "certificate-host-mismatch")),
]


@pytest.mark.parametrize(("cert", "sts", "required", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_each_session_outcome_is_counted_for_the_recipient_domain(
        pool: asyncpg.Pool, ours: int, sinks, clock: Clock, ca: trustme.CA, ca_file: str,
        policy_server: PolicyServer, cert: str | None, sts: bool, required: bool,
        expected: tuple[str, str]) -> None:
    records: dict[str, dict[str, list]] = {"far.test": {"MX": [(10, "mx.far.test.")]},
                                          "mx.far.test": {"A": ["127.0.0.1"]}}
    if sts:
        records |= {"_mta-sts.far.test": {"TXT": ["v=STSv1; id=1;"]}, "mta-sts.far.test": {"A": ["127.0.0.1"]}}
    dns = DNSTestServer(records).start()
    try:
        sink = await sinks(tls=_tls(ca, cert))
        await submit(pool, "r@far.test")
        resolver = Resolver(DNSSettings(nameservers=[dns.host], port=dns.port, timeout=1.0, cache_size=0))
        ob = outbound(pool, clock, resolver, mx_port=sink.port, mta_sts_port=policy_server.port,
                      tls_ca_file=ca_file, require_tls=["far.test"] if required else [],
                      connect_timeout=2, command_timeout=2)
        assert await ob.run_once() == 1
    finally:
        dns.stop()
    counts = await tlsoutcomes.for_day(pool, clock().date())
    assert [(k.policy_domain, k.policy_type, k.result_type, k.mx_host, k.mx_address, n)
            for k, (n, _detail) in counts.items()] == [("far.test", *expected, "mx.far.test", "127.0.0.1", 1)]
    failed = expected[1] != "success"
    assert bool(next(iter(counts.values()))[1]) == failed  # the failure's text, for additional-information


async def test_counts_add_up_and_a_smarthost_is_not_counted(pool: asyncpg.Pool, ours: int, sinks,
                                                            clock: Clock) -> None:
    sink = await sinks()
    dns = DNSTestServer({"far.test": {"MX": [(10, "mx.far.test.")]}, "mx.far.test": {"A": ["127.0.0.1"]}}).start()
    try:
        resolver = Resolver(DNSSettings(nameservers=[dns.host], port=dns.port, timeout=1.0, cache_size=0))
        ob = outbound(pool, clock, resolver, mx_port=sink.port, mta_sts=False,
                      transports={"far.example": f"smtp://127.0.0.1:{sink.port}"})
        for _ in range(2):
            await submit(pool, "r@far.test", "r@far.example")
            await ob.run_once()
    finally:
        dns.stop()
    assert len(sink.received) == 4
    counts = await tlsoutcomes.for_day(pool, clock().date())
    assert {(k.policy_domain, k.result_type): n for k, (n, _d) in counts.items()} == {
        ("far.test", "starttls-not-supported"): 2}
