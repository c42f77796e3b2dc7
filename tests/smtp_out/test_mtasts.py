"""MTA-STS (RFC 8461) on the outbound path: the policy from a real HTTPS server on loopback, the record
and the MX from the loopback DNS server, delivery to a sink; and the record and policy grammar."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import trustme

from config.settings import DNSSettings
from mailcore.dns.resolver import Resolver
from mailcore.mtasts import Policy, parse_policy, record_id
from smtp_out.mtasts import PolicySource
from tests.dnsserver import DNSTestServer
from tests.smtp_out.conftest import Clock, outbound, submit

DOMAIN = "far.test"
ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx.far.test\r\nmax_age: 86400\r\n"


@dataclass
class PolicyServer:
    """An HTTPS server for mta-sts.far.test answering every request with one scripted response."""

    tls: ssl.SSLContext
    body: str = ENFORCE
    status: str = "200 OK"
    ctype: str = "text/plain; charset=utf-8"
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> PolicyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            body = self.body.encode()
            writer.write(f"HTTP/1.1 {self.status}\r\nContent-Type: {self.ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def dns() -> Iterator[DNSTestServer]:
    server = DNSTestServer({
        DOMAIN: {"MX": [(10, "mx.far.test.")]},
        "mx.far.test": {"A": ["127.0.0.1"]},
        "_mta-sts.far.test": {"TXT": ["v=STSv1; id=20261130a;"]},
        "mta-sts.far.test": {"A": ["127.0.0.1"]},
    }).start()
    yield server
    server.stop()


@pytest.fixture
async def policy_server(ca: trustme.CA) -> AsyncIterator[PolicyServer]:
    server = await PolicyServer(_server_tls(ca, "mta-sts.far.test")).start()
    yield server
    await server.stop()


def _resolver(server: DNSTestServer) -> Resolver:
    return Resolver(DNSSettings(nameservers=[server.host], port=server.port, timeout=1.0, cache_size=0))


async def _send(pool: asyncpg.Pool, clock: Clock, dns: DNSTestServer, sink_port: int, policy: PolicyServer,
                ca_file: str) -> asyncpg.Record | None:
    """Queue one message to far.test, run one pass, and return its recipient row (None: delivered)."""
    qid = await submit(pool, f"r@{DOMAIN}")
    ob = outbound(pool, clock, _resolver(dns), mx_port=sink_port, mta_sts_port=policy.port, tls_ca_file=ca_file,
                  connect_timeout=2, command_timeout=2)
    assert await ob.run_once() == 1
    return await pool.fetchrow("SELECT status, status_code, last_error FROM queue_recipients WHERE queue_id=$1", qid)


async def test_enforced_policy_delivers_over_verified_tls(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                         dns: DNSTestServer, policy_server: PolicyServer,
                                                         ca: trustme.CA, ca_file: str) -> None:
    sink = await sinks(tls=_server_tls(ca, "mx.far.test"))
    assert await _send(pool, clock, dns, sink.port, policy_server, ca_file) is None
    assert sink.received[0].tls
    request = policy_server.requests[0]
    assert request.startswith(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n") and b"Host: mta-sts.far.test" in request


@pytest.mark.parametrize(("mode", "mx", "delivered", "status"), [
    # enforce: a server without STARTTLS gets nothing (opportunistic TLS would have sent in the clear)
    ("enforce", "mx.far.test", False, "4.7.4"),
    ("enforce", "*.far.test", False, "4.7.4"),  # a wildcard covers one label
    # enforce, and the MX is not one the policy names: no attempt at all
    ("enforce", "mx.elsewhere.test", False, "4.7.5"),
    ("enforce", "*.mx.far.test", False, "4.7.5"),
    # testing and none change nothing about delivery
    ("testing", "mx.far.test", True, None),
    ("none", "mx.far.test", True, None),
])
async def test_policy_modes_without_tls_at_the_mx(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                  dns: DNSTestServer, policy_server: PolicyServer, ca_file: str,
                                                  mode: str, mx: str, delivered: bool, status: str | None) -> None:
    policy_server.body = f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 600\n"
    sink = await sinks()  # no STARTTLS
    row = await _send(pool, clock, dns, sink.port, policy_server, ca_file)
    assert (row is None) is delivered
    assert len(sink.received) == (1 if delivered else 0)
    if status is not None:
        assert row is not None and row["status"] == "deferred" and row["status_code"] == status


@pytest.mark.parametrize("problem", ["no record", "HTTP 404", "not text/plain", "not a policy", "redirect"])
async def test_no_usable_policy_means_no_policy(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                dns: DNSTestServer, policy_server: PolicyServer, ca_file: str,
                                                problem: str) -> None:
    """Without a record, or when the policy cannot be had and none is held, the domain has none
    (RFC 8461 §5.1): opportunistic delivery goes on, here in plaintext."""
    if problem == "no record":
        with dns.zone.lock:
            del dns.zone.records["_mta-sts.far.test"]
    elif problem == "HTTP 404":
        policy_server.status = "404 Not Found"
    elif problem == "not text/plain":
        policy_server.ctype = "text/html"
    elif problem == "not a policy":
        policy_server.body = "<html>hello</html>"
    else:
        policy_server.status = "301 Moved Permanently"
    sink = await sinks()
    assert await _send(pool, clock, dns, sink.port, policy_server, ca_file) is None
    assert len(sink.received) == 1
    assert len(policy_server.requests) == (0 if problem == "no record" else 1)


async def test_a_policy_is_fetched_once_per_id_and_outlives_its_record(dns: DNSTestServer,
                                                                      policy_server: PolicyServer,
                                                                      ca_file: str) -> None:
    """Held for max_age: fetched again only when the record's id changes; a record that vanishes (or
    a fetch that fails) leaves the held policy in force, which is what stops an attacker who strips it."""
    source = PolicySource(_resolver(dns), port=policy_server.port, ca_file=ca_file)
    first = await source.policy(DOMAIN)
    assert first is not None and first.enforced and await source.policy(DOMAIN) == first
    assert len(policy_server.requests) == 1
    with dns.zone.lock:
        dns.zone.records["_mta-sts.far.test"] = {"TXT": ["v=STSv1; id=20261130b"]}
    policy_server.body = ENFORCE.replace("mode: enforce", "mode: testing")
    second = await source.policy(DOMAIN)
    assert second is not None and second.mode == "testing" and len(policy_server.requests) == 2
    with dns.zone.lock:
        dns.zone.records["_mta-sts.far.test"] = {"TXT": ["v=STSv1; id=20261130c"]}
    policy_server.status = "500 Internal Server Error"
    assert await source.policy(DOMAIN) == second  # the fetch failed: the held one stays
    with dns.zone.lock:
        del dns.zone.records["_mta-sts.far.test"]
    assert await source.policy(DOMAIN) == second


async def test_an_untrusted_policy_server_is_no_policy(dns: DNSTestServer, ca_file: str) -> None:
    """The policy's authenticity is its HTTPS certificate: one from another CA is refused."""
    server = await PolicyServer(_server_tls(trustme.CA(), "mta-sts.far.test")).start()
    try:
        source = PolicySource(_resolver(dns), port=server.port, ca_file=ca_file)
        assert await source.policy(DOMAIN) is None
    finally:
        await server.stop()


@pytest.mark.parametrize(("records", "policy_id"), [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1;id=abc"], "abc"),
    (["v=STSv1; id=abc; ext=1"], "abc"),
    (["something else", "v=STSv1; id=abc"], "abc"),  # other TXT records are ignored
    (["v=STSv1; id=abc", "v=STSv1; id=def"], None),  # two: no policy
    ([], None),
    (["v=STSv1;"], None),
    (["v=STSv1; id=" + "a" * 33], None),  # at most 32
    (["v=STSv1; id=a-b"], None),
    (["v=STSv1; id=a; id=b"], None),
    (["v=STSv2; id=a"], None),
])
def test_record_id(records: list[str], policy_id: str | None) -> None:
    assert record_id(records) == policy_id


@pytest.mark.parametrize(("text", "policy"), [
    ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
     Policy("enforce", ("mail.example.com", "*.example.net"), 604800)),
    ("version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 99999999999\n",  # 11 digits: refused
     None),
    ("version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 999999999\nextension: x\n",
     Policy("testing", ("mx.example.com",), 31_557_600)),
    ("version: STSv1\nmode: none\nmax_age: 0\n", Policy("none", (), 0)),
    ("version: STSv1\nmode: enforce\nmax_age: 60\n", None),  # enforce without mx
    ("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 60\n", None),
    ("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 60\n", None),
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", None),
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: ٦٠\n", None),  # ASCII digits only
    ("<html>\n", None),
])
def test_parse_policy(text: str, policy: Policy | None) -> None:
    if policy is None:
        with pytest.raises(ValueError):
            parse_policy(text)
    else:
        assert parse_policy(text) == policy


@pytest.mark.parametrize(("host", "allowed"), [
    ("mail.example.com", True), ("MAIL.example.com.", True), ("x.example.net", True),
    ("example.net", False), ("a.b.example.net", False), ("other.example.com", False),
])
def test_mx_patterns(host: str, allowed: bool) -> None:
    assert Policy("enforce", ("mail.example.com", "*.example.net"), 60).allows(host) is allowed


async def test_a_policy_outlives_the_process_in_the_database(pool: asyncpg.Pool, dns: DNSTestServer,
                                                             policy_server: PolicyServer, ca_file: str) -> None:
    """RFC 8461 §5 asks senders to keep a policy for its max_age: in memory alone a restart forgot it,
    and the first delivery after one went out opportunistically if the fetch could be made to fail."""
    first = PolicySource(_resolver(dns), port=policy_server.port, ca_file=ca_file, pool=pool)
    policy = await first.policy(DOMAIN)
    assert policy is not None and policy.enforced
    row = await pool.fetchrow("SELECT policy_id, expires_at - fetched_at AS age FROM mta_sts_policies"
                              " WHERE domain = $1", DOMAIN)
    assert row["policy_id"] == "20261130a" and abs(row["age"].total_seconds() - 86400) < 60
    # a new process (or another instance), the record stripped and the policy server failing
    with dns.zone.lock:
        del dns.zone.records["_mta-sts.far.test"]
    policy_server.status = "500 Internal Server Error"
    assert await PolicySource(_resolver(dns), port=policy_server.port, ca_file=ca_file,
                              pool=pool).policy(DOMAIN) == policy
    assert len(policy_server.requests) == 1
    # an expired one is not
    await pool.execute("UPDATE mta_sts_policies SET expires_at = now() - interval '1 second'")
    assert await PolicySource(_resolver(dns), port=policy_server.port, ca_file=ca_file,
                              pool=pool).policy(DOMAIN) is None


async def test_a_domain_without_a_stored_policy_is_not_asked_again_at_once(pool: asyncpg.Pool, dns: DNSTestServer,
                                                                          ca_file: str) -> None:
    """Most destinations have no policy: the database is asked once an hour per domain, not per delivery
    (a stored policy that appears meanwhile is found through the record and a fetch instead)."""
    with dns.zone.lock:
        del dns.zone.records["_mta-sts.far.test"]
    source = PolicySource(_resolver(dns), ca_file=ca_file, pool=pool)
    assert await source.policy(DOMAIN) is None
    await pool.execute("INSERT INTO mta_sts_policies (domain, policy_id, policy, expires_at)"
                       " VALUES ($1, 'x', $2, now() + interval '1 day')", DOMAIN, ENFORCE)
    assert await source.policy(DOMAIN) is None  # not asked again within the hour
    later = PolicySource(_resolver(dns), ca_file=ca_file, pool=pool)
    assert (await later.policy(DOMAIN)).enforced  # a process that has not asked yet finds it
