"""DKIM signing once before the first attempt, verified at the sink with dkimpy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import asyncpg
import dkim
import dns.resolver
import pytest
from dkim.util import parse_tag_value

from config.settings import DNSSettings
from mailcore.auth.dkim import generate_key, sign_message
from mailcore.dns.resolver import Resolver
from storage import accounts, dkim_keys
from tests.dnsserver import DNSTestServer
from tests.smtp_out.conftest import SENDER, Clock, outbound, submit, to_sink


async def test_signed_once_and_every_attempt_sends_the_same_bytes(pool: asyncpg.Pool, ours: int, sinks,
                                                                  clock: Clock) -> None:
    pem, txt = generate_key("rsa", 2048)
    await dkim_keys.add_key(pool, "ours.example", "s1", pem, "rsa-sha256")
    sink = await sinks(rcpt={"r@far.example": "451 4.2.0 later"})
    qid = await submit(pool, "r@far.example", account_id=ours)
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
    await submit(pool, "r@far.example", account_id=ours)
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
    await submit(pool, "r@far.test", raw=BARE, account_id=ours)
    resolver = Resolver(DNSSettings(nameservers=[published.host], port=published.port, timeout=1.0, cache_size=0))
    assert await outbound(pool, clock, resolver, signer=sign_message, mx_port=sink.port).run_once() == 1
    (got,) = sink.received
    assert got.data.startswith(b"DKIM-Signature:")
    assert b"bare cr\r\n folded" in got.data and b"line one\r\nline two\r\nline three\r\n" in got.data
    assert await asyncio.to_thread(dkim.verify, got.data, dnsfunc=_published_key(published))


# --- which domain signs ------------------------------------------------------------------------------
# DMARC (RFC 7489 §3.1) aligns DKIM's d= with the RFC5322.From domain, not the envelope sender's. Keys
# are made by the project's own key function, stored as `mailserver dkim generate` stores them, and the
# signature the sink received is verified with dkimpy against the record the loopback DNS server serves.

KEYED = ("brand.example", "mail.brand.example", "ours.example", "xn--bcher-kva.example")  # bücher.example
HOSTED = KEYED


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, str]]:
    """One Ed25519 key (quick to make) per domain that may hold one: domain -> (PEM, TXT record)."""
    return {domain: generate_key("ed25519") for domain in KEYED}


@pytest.fixture(scope="module")
def world(keys: dict[str, tuple[str, str]]) -> Iterator[DNSTestServer]:
    """The DNS a remote verifier asks: selector s1 of every domain that may hold a key."""
    server = DNSTestServer({f"s1._domainkey.{d}": {"TXT": [txt]} for d, (_pem, txt) in keys.items()})
    yield server.start()
    server.stop()


async def _hosting(pool: asyncpg.Pool, keys: dict[str, tuple[str, str]], keyed: tuple[str, ...]) -> None:
    """Our hosted domains (ours.example is the fixture's), with keys for `keyed` only."""
    for domain in HOSTED:
        if domain != "ours.example":
            await accounts.add_domain(pool, domain)
    for domain in keyed:
        await dkim_keys.add_key(pool, domain, "s1", keys[domain][0], "ed25519-sha256")


def _signing_domain(data: bytes) -> str | None:
    """d= of the message's first DKIM-Signature, None when it has none."""
    if not data.startswith(b"DKIM-Signature:"):
        return None
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    match = re.search(r"DKIM-Signature:((?:\r\n[ \t]|.)*)", head)
    assert match is not None
    return dict(parse_tag_value(match.group(1).replace("\r\n", "").encode()))[b"d"].decode()


def _author_message(from_lines: bytes) -> bytes:
    return (from_lines + b"To: <r@far.example>\r\nSubject: which key\r\n"
            b"Message-ID: <which.key@ours.example>\r\n\r\nthe body\r\n")


# (case, the From field lines of a message our account submits, its envelope sender, domains holding a key,
# expected d=)
SIGNING_CASES = [
    ("from-domain-has-a-key", b"From: News <news@mail.brand.example>\r\n", "s@brand.example",
     ("mail.brand.example", "brand.example"), "mail.brand.example"),
    ("only-a-parent-of-from-has-a-key", b"From: <bounces@mail.brand.example>\r\n", "s@lists.brand.example",
     ("brand.example", "ours.example"), "brand.example"),
    ("only-the-envelope-domain-has-a-key", b"From: <news@mail.brand.example>\r\n", "s@brand.example",
     ("brand.example",), "brand.example"),
    # another organisation's From (another hosted tenant's domain) is only the account's word: the
    # envelope sender, which submission checked, signs
    ("from-in-another-organisation", b"From: <ceo@brand.example>\r\n", SENDER,
     ("brand.example", "ours.example"), "ours.example"),
    ("no-key-at-all", b"From: <news@mail.brand.example>\r\n", "s@brand.example", (), None),
    ("garbage-from", b"From: <<@@>>;; \"unterminated\r\n", SENDER, ("brand.example", "ours.example"),
     "ours.example"),
    ("two-from-fields", b"From: <a@ours.example>\r\nFrom: <b@ours.example>\r\n", SENDER,
     ("brand.example", "ours.example"), "ours.example"),
    ("from-with-two-domains", b"From: <a@brand.example>, <b@ours.example>\r\n", SENDER,
     ("brand.example", "ours.example"), "ours.example"),
    ("non-ascii-from", "From: Jürgen <jürgen@bücher.example>\r\n".encode(), "s@xn--bcher-kva.example",
     ("xn--bcher-kva.example", "ours.example"), "xn--bcher-kva.example"),
    ("non-ascii-garbage", b"From: \xff\xfe@\xc3\x28.example\r\n", SENDER, ("brand.example", "ours.example"),
     "ours.example"),
    ("no-from-is-not-signed", b"", SENDER, ("brand.example", "ours.example"), None),
]


@pytest.mark.parametrize(("from_lines", "sender", "keyed", "expected"), [c[1:] for c in SIGNING_CASES],
                         ids=[c[0] for c in SIGNING_CASES])
async def test_the_from_domain_signs_then_its_parent_then_the_envelope_domain(
        pool: asyncpg.Pool, ours: int, sinks, clock: Clock, keys: dict[str, tuple[str, str]],
        world: DNSTestServer, from_lines: bytes, sender: str, keyed: tuple[str, ...], expected: str | None) -> None:
    await _hosting(pool, keys, keyed)
    sink = await sinks()
    await submit(pool, "r@far.example", sender=sender, raw=_author_message(from_lines), account_id=ours)
    assert await outbound(pool, clock, signer=sign_message, transports=to_sink(sink)).run_once() == 1
    (got,) = sink.received
    assert _signing_domain(got.data) == expected
    if expected is not None:
        assert await asyncio.to_thread(dkim.verify, got.data, dnsfunc=_published_key(world))


@pytest.mark.parametrize("sender", ["someone@far.test", "ceo@brand.example"], ids=["foreign", "our-domain"])
async def test_relayed_mail_is_not_signed(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                          keys: dict[str, tuple[str, str]], sender: str) -> None:
    """Mail no account of ours submitted (from the MX to an alias elsewhere) claiming one of our domains
    in From, or in MAIL FROM too, does not get that domain's signature: it would pass DMARC for whoever
    forged it."""
    await _hosting(pool, keys, ("brand.example", "ours.example"))
    sink = await sinks()
    await submit(pool, "r@far.example", sender=sender, raw=_author_message(b"From: CEO <ceo@brand.example>\r\n"))
    assert await outbound(pool, clock, signer=sign_message, transports=to_sink(sink)).run_once() == 1
    assert _signing_domain(sink.received[0].data) is None


@pytest.mark.parametrize(("keyed", "expected"), [(("ours.example",), "ours.example"), ((), None)],
                         ids=["hostname-parent-has-a-key", "no-key"])
async def test_a_bounce_to_a_remote_sender_is_signed_for_the_host_name(
        pool: asyncpg.Pool, ours: int, sinks, clock: Clock, keys: dict[str, tuple[str, str]],
        world: DNSTestServer, keyed: tuple[str, ...], expected: str | None) -> None:
    """Our DSN (From MAILER-DAEMON@mx.ours.example, null sender) is signed by the host name's domain or,
    as here, its parent: unsigned bounces fare badly at large receivers."""
    await _hosting(pool, keys, keyed)
    sink = await sinks(rcpt={"bad@far.example": "550 5.1.1 no such user"})
    await submit(pool, "bad@far.example", sender="someone@far.test",
                 raw=_author_message(b"From: <someone@far.test>\r\n"))
    transports = {**to_sink(sink), **to_sink(sink, "far.test")}
    assert await outbound(pool, clock, signer=sign_message, transports=transports).run_once() == 2
    (dsn,) = sink.received
    assert dsn.mail_from in ("", "<>") and dsn.rcpt_tos == ["someone@far.test"]
    assert b"From: Mail Delivery System <MAILER-DAEMON@mx.ours.example>" in dsn.data
    assert _signing_domain(dsn.data) == expected
    if expected is not None:
        assert await asyncio.to_thread(dkim.verify, dsn.data, dnsfunc=_published_key(world))


async def test_keys_are_remembered_not_asked_for_each_message(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                              keys: dict[str, tuple[str, str]]) -> None:
    """Every candidate domain's key (or its absence) is remembered for KEY_CACHE_SECONDS: a key removed
    from the store still signs the next message within that time, the proof no query was made for it."""
    await _hosting(pool, keys, ("brand.example",))
    sink = await sinks()
    ob = outbound(pool, clock, signer=sign_message, transports=to_sink(sink))
    raw = _author_message(b"From: <news@mail.brand.example>\r\n")
    await submit(pool, "r@far.example", sender="s@brand.example", raw=raw, account_id=ours)
    await ob.run_once()
    await pool.execute("DELETE FROM dkim_keys")
    await submit(pool, "r@far.example", sender="s@brand.example", raw=raw, account_id=ours)
    await ob.run_once()
    assert [_signing_domain(r.data) for r in sink.received] == ["brand.example", "brand.example"]
