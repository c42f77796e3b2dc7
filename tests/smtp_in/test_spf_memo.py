"""SenderAuthentication reuses SPF results for the same (IP, HELO, MAIL FROM) for a short time."""

from __future__ import annotations

from config.settings import AuthPolicySettings
from mailcore.auth.dmarc import OrganizationalDomains
from mailcore.dns.fake import FakeResolver
from smtp_in.senderauth import SenderAuthentication

RECORDS = {"example.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}}


def auth(resolver: FakeResolver) -> SenderAuthentication:
    return SenderAuthentication(resolver, "mx.ours.example", AuthPolicySettings(), dns_timeout=1.0,
                                org=OrganizationalDomains())


async def test_the_same_questions_are_answered_once() -> None:
    resolver = FakeResolver(RECORDS)
    sa = auth(resolver)
    first = await sa.start_spf("192.0.2.1", "h.example.test", "a@example.test")
    asked = len(resolver.queries)
    again = await sa.start_spf("192.0.2.1", "h.example.test", "a@example.test")
    assert again == first and first.spf.result == "pass"
    assert len(resolver.queries) == asked
    other = await sa.start_spf("192.0.2.9", "h.example.test", "a@example.test")  # another client
    assert other.spf.result == "fail" and len(resolver.queries) > asked


async def test_temporary_errors_are_not_kept() -> None:
    resolver = FakeResolver(RECORDS, fail=["example.test"])
    sa = auth(resolver)
    assert (await sa.start_spf("192.0.2.1", "h.example.test", "a@example.test")).spf.result == "temperror"
    resolver.fail.clear()
    assert (await sa.start_spf("192.0.2.1", "h.example.test", "a@example.test")).spf.result == "pass"
