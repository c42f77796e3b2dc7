"""mailcore/auth/check.py: the whole inbound authentication with its disposition, over FakeResolver
and once over the loopback DNS server."""

from __future__ import annotations

import pytest

from config.settings import AuthPolicySettings
from mailcore.auth.check import _header_names, authenticate_message
from mailcore.auth.dkim import generate_key, sign_message
from mailcore.auth.dmarc import OrganizationalDomains
from mailcore.auth.spf import SPFResult
from mailcore.dns.fake import FakeResolver
from mailcore.lineends import normalize_crlf
from tests.hangguard import no_hang
from tests.mailcore.conftest import resolver_for

PRIVATE, PUBLIC = generate_key("ed25519")
ORG = OrganizationalDomains()
GOOD_IP, BAD_IP = "192.0.2.10", "203.0.113.66"


def zone(policy: str = "reject") -> dict:
    return {
        "example.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "s1._domainkey.example.test": {"TXT": [PUBLIC]},
        "_dmarc.example.test": {"TXT": [f"v=DMARC1; p={policy}"]},
        "esp.test": {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"]},
        "monitor.test": {"TXT": ["v=spf1 -all"]},
        "_dmarc.monitor.test": {"TXT": ["v=DMARC1; p=none"]},
    }


def message(from_addr: str = "alice@example.test", sign: bool = True, body: bytes = b"Hello.\r\n") -> bytes:
    raw = normalize_crlf(f"From: Alice <{from_addr}>\nTo: bob@ours.test\nSubject: hi\n\n".encode() + body)
    if sign:
        raw = sign_message(raw, "example.test", "s1", PRIVATE, "ed25519") + raw
    return raw


async def run(raw: bytes, ip: str, mail_from: str, resolver=None, **kwargs):
    resolver = resolver or FakeResolver(zone())
    return await authenticate_message(resolver, raw, ip, "client.example.test", mail_from, "mx.ours.test",
                                      org=ORG, **kwargs)


async def test_everything_passes() -> None:
    verdict = await run(message(), GOOD_IP, "alice@example.test")
    assert verdict.disposition == "accept"
    assert (verdict.spf.result, verdict.dkim[0].result, verdict.dmarc.result, verdict.arc.result) == (
        "pass", "pass", "pass", "none")
    assert verdict.header.startswith("mx.ours.test; spf=pass")
    assert "dkim=pass header.d=example.test" in verdict.header
    assert "dmarc=pass (p=reject) header.from=example.test; arc=none" in verdict.header


async def test_forwarded_dkim_alone_passes_dmarc() -> None:
    verdict = await run(message(), BAD_IP, "bounce@esp.test")
    assert (verdict.spf.result, verdict.dmarc.result, verdict.disposition) == ("pass", "pass", "accept")


@pytest.mark.parametrize(("policy", "settings", "disposition"), [
    ("reject", AuthPolicySettings(), "reject"),
    ("quarantine", AuthPolicySettings(), "quarantine"),
    ("none", AuthPolicySettings(), "accept"),
    ("reject", AuthPolicySettings(enforce=False), "accept"),
    ("reject", AuthPolicySettings(dmarc_reject="quarantine"), "quarantine"),
    ("reject", AuthPolicySettings(dmarc_reject="none"), "accept"),
    ("quarantine", AuthPolicySettings(dmarc_quarantine="reject"), "reject"),
])
async def test_spoofed_from(policy: str, settings: AuthPolicySettings, disposition: str) -> None:
    verdict = await run(message(sign=False), BAD_IP, "bounce@esp.test", FakeResolver(zone(policy)),
                        policy=settings)
    assert verdict.dmarc.result == "fail"
    assert verdict.disposition == disposition
    assert f"dmarc=fail (p={policy}" in verdict.header


async def test_tampered_body_fails_dkim_and_dmarc() -> None:
    raw = message().replace(b"Hello.", b"Send money.")
    verdict = await run(raw, BAD_IP, "alice@example.test")
    assert (verdict.spf.result, verdict.dkim[0].result, verdict.dmarc.result) == ("fail", "fail", "fail")
    assert verdict.disposition == "reject"


async def test_dmarc_lookup_temperror_is_tempfail() -> None:
    resolver = FakeResolver(zone(), timeout={"_dmarc.example.test"})
    verdict = await run(message(), GOOD_IP, "alice@example.test", resolver)
    assert (verdict.dmarc.result, verdict.disposition) == ("temperror", "tempfail")
    assert "dmarc=temperror" in verdict.header
    verdict = await run(message(), GOOD_IP, "alice@example.test", resolver,
                        policy=AuthPolicySettings(enforce=False))
    assert verdict.disposition == "accept"


async def test_aligned_dkim_key_temperror_defers_instead_of_rejecting() -> None:
    resolver = FakeResolver(zone(), timeout={"s1._domainkey.example.test"})
    verdict = await run(message(), BAD_IP, "bounce@esp.test", resolver)
    assert (verdict.dkim[0].result, verdict.dmarc.result, verdict.disposition) == (
        "temperror", "fail", "tempfail")


async def test_spf_computed_at_mail_from_is_used() -> None:
    early = SPFResult("pass", "example.test", "", "checked at MAIL FROM")
    resolver = FakeResolver(zone())
    verdict = await run(message(sign=False), BAD_IP, "alice@example.test", resolver, spf=early)
    assert verdict.spf is early
    assert ("example.test", "TXT") not in resolver.queries  # SPF not asked again
    assert verdict.disposition == "accept"


@pytest.mark.parametrize("raw", [
    b"To: bob@ours.test\r\n\r\nno from\r\n",
    b"From: a@example.test\r\nFrom: b@example.test\r\n\r\ntwo froms\r\n",
])
async def test_unusable_from_is_a_dmarc_permerror(raw: bytes) -> None:
    verdict = await run(raw, BAD_IP, "x@esp.test")
    assert (verdict.dmarc.result, verdict.disposition) == ("permerror", "accept")
    assert verdict.dkim[0].result == "none"
    assert "dkim=none" in verdict.header and "dmarc=permerror" in verdict.header


@pytest.mark.parametrize(("head", "dkim", "arc"), [
    (b"From: Alice <alice@example.test>\r\nSubject: hi\r\n", "none", "none"),
    # dkimpy refuses this block: its verdicts (not a shortcut's "none") are what gets reported
    (b"From: Alice <alice@example.test>\r\nnot a header line\r\n", "permerror", "fail"),
    (b"From: Alice <alice@example.test>\r\nBad Name: x\r\n", "permerror", "fail"),
    (b" folded first line\r\nFrom: Alice <alice@example.test>\r\n", "permerror", "fail"),
    (b"From Alice Mon Jan  1 00:00:00 2024\r\nFrom: Alice <alice@example.test>\r\n", "none", "none"),
    (b"From: Alice <alice@example.test>\r\nARC-Seal: i=1; cv=none\r\n", "none", "fail"),
    (b"From: Alice <alice@example.test>\r\nDKIM-Signature: v=1\r\n", "neutral", "none"),
])
async def test_signature_results_for_header_blocks(head: bytes, dkim: str, arc: str) -> None:
    """The unsigned-message shortcut gives exactly what dkimpy would: unparsable header blocks and
    signature-looking fields still go through the verifiers."""
    verdict = await run(head + b"\r\nthe body names DKIM-Signature: and ARC-Seal:\r\n", BAD_IP,
                        "x@esp.test")
    assert (verdict.dkim[0].result, verdict.arc.result) == (dkim, arc)


def test_header_names_is_linear_on_colon_laden_lines() -> None:
    """Lines like "X:a:a:a" followed by a line dkimpy refuses made the unsigned-message shortcut's
    pattern try every colon of every line as the end of the field name: 10 lines held the loop 4 to 24 s,
    each more line multiplies it by about six."""
    head = b"X:a:a:a:a:a:a\r\n" * 12 + b"not a header line\r\n"
    with no_hang():
        assert _header_names(head + b"\r\nbody\r\n") is None


async def test_huge_header_block_is_left_to_the_verifiers_threads() -> None:
    """8 MB of fields ending in a line that is no field: the shortcut ran dkimpy's line-by-line parse on
    the loop thread (1-2 s; 7 s for 50 MB). Now such a block goes to the verifiers, which say the same."""
    head = b"X-Filler: some value here and more\r\n" * 220_000 + b"not a header line\r\n"
    raw = head + b"From: Alice <alice@example.test>\r\n\r\nbody\r\n"
    assert _header_names(raw) is None
    verdict = await run(raw, BAD_IP, "x@esp.test")
    assert (verdict.dkim[0].result, verdict.arc.result, verdict.dmarc.result) == ("permerror", "fail", "fail")


async def test_header_carries_no_injected_lines() -> None:
    verdict = await run(message(), GOOD_IP, "alice\r\nX-Evil: 1@example.test")
    assert "\r" not in verdict.header and "\n" not in verdict.header


async def test_end_to_end_over_loopback_dns(dns_server) -> None:
    server = dns_server(zone())
    resolver = resolver_for(server)
    verdict = await authenticate_message(resolver, message(), GOOD_IP, "client.example.test",
                                         "alice@example.test", "mx.ours.test", org=ORG)
    assert (verdict.disposition, verdict.dmarc.result) == ("accept", "pass")
    verdict = await authenticate_message(resolver, message(sign=False), BAD_IP, "client.example.test",
                                         "alice@example.test", "mx.ours.test", org=ORG)
    assert (verdict.disposition, verdict.dmarc.result) == ("reject", "fail")
