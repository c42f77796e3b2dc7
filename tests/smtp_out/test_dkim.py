"""DKIM signing once before the first attempt, verified at the sink with dkimpy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import asyncpg
import dkim
import dns.resolver
import pytest

from config.settings import DNSSettings
from mailcore.auth.dkim import generate_key, sign_message
from mailcore.dns.resolver import Resolver
from storage import dkim_keys
from tests.dnsserver import DNSTestServer
from tests.smtp_out.conftest import Clock, outbound, submit, to_sink


async def test_signed_once_and_every_attempt_sends_the_same_bytes(pool: asyncpg.Pool, ours: int, sinks,
                                                                  clock: Clock) -> None:
    pem, txt = generate_key("rsa", 2048)
    await dkim_keys.add_key(pool, "ours.example", "s1", pem, "rsa-sha256")
    sink = await sinks(rcpt={"r@far.example": "451 4.2.0 later"})
    qid = await submit(pool, "r@far.example")
    calls = []

    def counting_signer(*args):
        calls.append(args[1:3])
        return sign_message(*args)

    ob = outbound(pool, clock, signer=counting_signer, transports=to_sink(sink))
    await ob.run_once()
    prefix = await pool.fetchval("SELECT signed_prefix FROM queue WHERE id=$1", qid)
    assert prefix.startswith(b"DKIM-Signature:") and b"d=ours.example" in prefix and b"s=s1" in prefix
    sink.rcpt.clear()
    clock.advance(3600)
    await ob.run_once()
    assert calls == [("ours.example", "s1")]  # signed once, for the first attempt only
    (got,) = sink.received
    assert got.data.startswith(prefix)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.ours.example."
        return txt.encode()

    assert dkim.verify(got.data, dnsfunc=dnsfunc)


async def test_unsigned_without_a_key(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks()
    await submit(pool, "r@far.example")
    await outbound(pool, clock, signer=sign_message, transports=to_sink(sink)).run_once()
    assert not sink.received[0].data.startswith(b"DKIM-Signature")


# A bare CR and a bare LF in the header (the CR before a space: a fold once it is a line ending) and in
# the body. RFC 6376 §5.3: the signer must turn each into CRLF before signing, as SMTP will send them.
BARE = (b"From: <sender@ours.example>\r\nTo: <r@far.test>\nSubject: bare cr\r folded\r\n"
        b"Message-ID: <bare@ours.example>\r\n\r\nline one\rline two\nline three\r\n")


@pytest.fixture(scope="module")
def key() -> tuple[str, str]:
    """ours.example's signing key: (private key PEM, selector TXT record)."""
    return generate_key("rsa", 2048)


@pytest.fixture
def published(key: tuple[str, str]) -> Iterator[DNSTestServer]:
    """The world's DNS as the remote verifier sees it: far.test's MX on loopback, our selector record."""
    server = DNSTestServer({"far.test": {"MX": [(10, "mx.far.test.")]}, "mx.far.test": {"A": ["127.0.0.1"]},
                            "s1._domainkey.ours.example": {"TXT": [key[1]]}})
    yield server.start()
    server.stop()


def _published_key(server: DNSTestServer) -> Callable[..., bytes]:
    """dkimpy's `dnsfunc`, asking the test DNS server as a remote verifier asks the world's DNS."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout, tcp=True)
        return b"".join(answer[0].strings)  # type: ignore[attr-defined]

    return dnsfunc


async def test_bare_cr_and_lf_are_signed_as_they_are_sent(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                          key: tuple[str, str], published: DNSTestServer) -> None:
    await dkim_keys.add_key(pool, "ours.example", "s1", key[0], "rsa-sha256")
    sink = await sinks()
    await submit(pool, "r@far.test", raw=BARE)
    resolver = Resolver(DNSSettings(nameservers=[published.host], port=published.port, timeout=1.0, cache_size=0))
    assert await outbound(pool, clock, resolver, signer=sign_message, mx_port=sink.port).run_once() == 1
    (got,) = sink.received
    assert got.data.startswith(b"DKIM-Signature:")
    assert b"bare cr\r\n folded" in got.data and b"line one\r\nline two\r\nline three\r\n" in got.data
    assert await asyncio.to_thread(dkim.verify, got.data, dnsfunc=_published_key(published))
