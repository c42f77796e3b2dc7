"""mailcore/auth/dmarc.py: organisational domains (PSL conformance cases), record parsing, alignment,
policy discovery and evaluation (tables built from RFC 7489 §3.1, §6.3, §6.6)."""

from __future__ import annotations

import pytest

from mailcore.auth.dkim import DKIMResult
from mailcore.auth.dmarc import (
    DMARCSyntaxError,
    OrganizationalDomains,
    aligned,
    check_dmarc,
    from_header_domain,
    parse_record,
)
from mailcore.auth.spf import SPFResult
from mailcore.dns.fake import FakeResolver
from tests.hangguard import no_hang
from tests.mailcore.auth.vectors import DATA


@pytest.fixture(scope="module")
def org() -> OrganizationalDomains:
    return OrganizationalDomains()


def _psl_cases() -> list[tuple[str | None, str | None]]:
    cases = []
    for line in (DATA / "dmarc" / "psl-tests.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("//"):
            continue
        domain, expected = line.split()
        cases.append((None if domain == "null" else domain, None if expected == "null" else expected))
    return cases


PSL_CASES = _psl_cases()


@pytest.mark.parametrize(("domain", "expected"), PSL_CASES)
def test_psl_conformance(org: OrganizationalDomains, domain: str | None, expected: str | None) -> None:
    assert org.registrable(domain) == expected


def test_psl_case_count() -> None:
    assert len(PSL_CASES) >= 70


def test_organizational_domain_of_a_public_suffix_is_itself(org: OrganizationalDomains) -> None:
    assert org.organizational("a.b.example.co.uk") == "example.co.uk"
    assert org.organizational("co.uk") == "co.uk"
    assert org.organizational("Mail.Example.TEST.") == "example.test"


@pytest.mark.parametrize(("text", "expected"), [
    ("v=DMARC1; p=reject", {"p": "reject", "sp": None, "pct": 100, "adkim": "r", "aspf": "r"}),
    ("v=DMARC1;p=quarantine;sp=none;pct=20;adkim=s;aspf=s",
     {"p": "quarantine", "sp": "none", "pct": 20, "adkim": "s", "aspf": "s"}),
    ("V = dmarc1 ; P = Reject ; ", {"p": "reject"}),
    ("v=DMARC1; p=none; rua=mailto:a@example.test, mailto:b@example.test!10m; x-new=1",
     {"rua": ("mailto:a@example.test", "mailto:b@example.test!10m"), "other": {"x-new": "1"}}),
    ("v=DMARC1; p=bogus; rua=mailto:a@example.test", {"p": "none"}),   # §6.6.3: act as p=none
    ("v=DMARC1; p=reject; pct=250; adkim=x", {"pct": 100, "adkim": "r"}),  # invalid optional: default
])
def test_parse_record(text: str, expected: dict) -> None:
    record = parse_record(text)
    for key, value in expected.items():
        assert getattr(record, key) == value


def test_parse_record_is_linear_in_a_run_of_spaces() -> None:
    # The From domain's zone chooses the record: a tag pattern ending "(.*?)\s*$" was quadratic in it.
    with no_hang():  # 6 s at 30,000 spaces before, minutes at 200,000
        record = parse_record("v=DMARC1; p=reject; x=a" + " " * 200_000 + "b")
    assert (record.p, record.other["x"]) == ("reject", "a" + " " * 200_000 + "b")


@pytest.mark.parametrize("text", [
    "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1", "v=DMARC1; p=bogus", "v=DMARC1; p=reject; junk",
    "v=DMARC1; p=reject; sp=maybe",
])
def test_parse_record_rejects(text: str) -> None:
    with pytest.raises(DMARCSyntaxError):
        parse_record(text)


@pytest.mark.parametrize(("values", "domain"), [
    (["Alice <alice@Example.TEST>"], "example.test"),
    (["alice@a.example.test, bob@a.example.test"], "a.example.test"),
    ([], None),
    (["a@example.test", "b@example.test"], None),
    (["a@example.test, b@other.test"], None),
    (["undisclosed-recipients:;"], None),
    (["no-domain"], None),
    # longer than the memo's bound: the same answers without it
    (["A" * 600 + " <alice@Example.TEST>"], "example.test"),
    (["a@example.test, " + "b" * 600 + "@other.test"], None),
])
def test_from_header_domain(values: list[str], domain: str | None) -> None:
    for _ in range(2):  # the second answer may come from the memo
        got, reason = from_header_domain(values)
        assert got == domain
        assert bool(reason) == (domain is None)


@pytest.mark.parametrize(("identifier", "author", "mode", "ok"), [
    ("example.test", "example.test", "s", True),
    ("mail.example.test", "example.test", "s", False),
    ("mail.example.test", "example.test", "r", True),
    ("example.test", "news.example.test", "r", True),
    ("example.co.uk", "other.co.uk", "r", False),   # public suffix in common is not enough
    ("evil.test", "example.test", "r", False),
    ("", "example.test", "r", False),
    # RFC 8616: d= and SPF domains are A-labels, an internationalised From may be U-labels
    ("xn--bcher-kva.example", "BÜCHER.example", "s", True),
    ("mail.xn--bcher-kva.example", "bücher.example.", "r", True),
    ("xn--bcher-kva.example", "bucher.example", "r", False),
])
def test_alignment(org: OrganizationalDomains, identifier: str, author: str, mode: str, ok: bool) -> None:
    assert aligned(identifier, author, mode, org) is ok


ZONE = {
    "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]},
    "_dmarc.quar.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "_dmarc.mon.test": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.half.test": {"TXT": ["v=DMARC1; p=reject; pct=50"]},
    "_dmarc.own.example.test": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.two.test": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.mixed.test": {"TXT": ["some verification token", "v=DMARC1; p=quarantine"]},
    "_dmarc.broken.test": {"TXT": ["v=DMARC1; p=nonsense"]},
    "_dmarc.nosp.test": {"TXT": ["v=DMARC1; p=reject"]},
}


def spf(result: str, domain: str) -> SPFResult:
    return SPFResult(result, domain)


def dkim(result: str, domain: str) -> DKIMResult:
    return DKIMResult(result, domain, "s", "rsa-sha256")


# (From domain, SPF result, DKIM results, expected result, applied policy, published policy)
TABLE = [
    ("example.test", spf("pass", "example.test"), [], "pass", "none", "reject"),
    ("example.test", spf("pass", "bounce.example.test"), [], "pass", "none", "reject"),  # relaxed
    ("example.test", spf("fail", "example.test"), [dkim("pass", "example.test")], "pass", "none", "reject"),
    ("example.test", spf("pass", "esp.test"), [dkim("pass", "esp.test")], "fail", "reject", "reject"),
    ("example.test", spf("softfail", "example.test"), [dkim("fail", "example.test")], "fail", "reject", "reject"),
    ("example.test", None, [dkim("fail", "example.test"), dkim("pass", "mail.example.test")],
     "pass", "none", "reject"),
    # subdomain without its own record: the organisational record's sp= applies
    ("news.example.test", spf("fail", "news.example.test"), [], "fail", "quarantine", "quarantine"),
    ("news.example.test", spf("pass", "example.test"), [], "pass", "none", "quarantine"),
    # subdomain with its own record: its p= applies
    ("own.example.test", spf("fail", "own.example.test"), [], "fail", "none", "none"),
    # no sp=: p= applies to subdomains too
    ("a.nosp.test", spf("fail", "a.nosp.test"), [], "fail", "reject", "reject"),
    # strict alignment
    ("strict.test", spf("pass", "mail.strict.test"), [dkim("pass", "mail.strict.test")], "fail", "reject", "reject"),
    ("strict.test", spf("pass", "strict.test"), [], "pass", "none", "reject"),
    ("quar.test", spf("fail", "quar.test"), [], "fail", "quarantine", "quarantine"),
    ("mon.test", spf("fail", "mon.test"), [], "fail", "none", "none"),
    ("mixed.test", spf("fail", "mixed.test"), [], "fail", "quarantine", "quarantine"),
    ("nodmarc.test", spf("fail", "nodmarc.test"), [], "none", "none", "none"),
    ("two.test", spf("fail", "two.test"), [], "none", "none", "none"),          # §6.6.3: several records
    ("broken.test", spf("fail", "broken.test"), [], "permerror", "none", "none"),
    # a temperror or neutral DKIM result never aligns
    ("quar.test", spf("temperror", "quar.test"), [dkim("temperror", "quar.test")], "fail", "quarantine",
     "quarantine"),
]


@pytest.mark.parametrize(("author", "spf_result", "dkim_results", "result", "policy", "published"), TABLE)
async def test_evaluation(org: OrganizationalDomains, author: str, spf_result: SPFResult | None,
                          dkim_results: list[DKIMResult], result: str, policy: str, published: str) -> None:
    got = await check_dmarc(FakeResolver(ZONE), author, spf_result, dkim_results, org)
    assert (got.result, got.policy, got.published_policy) == (result, policy, published), got.reason
    assert got.from_domain == author
    assert got.org_domain == org.organizational(author)
    assert got.reason


@pytest.mark.parametrize(("sample", "policy"), [(0.0, "reject"), (0.49, "reject"), (0.5, "quarantine"),
                                                (0.99, "quarantine")])
async def test_pct_sampling_is_injectable(org: OrganizationalDomains, sample: float, policy: str) -> None:
    got = await check_dmarc(FakeResolver(ZONE), "half.test", spf("fail", "half.test"), [], org,
                            sample=lambda: sample)
    assert (got.result, got.policy, got.published_policy) == ("fail", policy, "reject")


async def test_dns_temperror(org: OrganizationalDomains) -> None:
    resolver = FakeResolver(ZONE, timeout={"_dmarc.sub.example.test", "_dmarc.slow.test"})
    got = await check_dmarc(resolver, "slow.test", spf("pass", "slow.test"), [], org)
    assert got.result == "temperror"
    got = await check_dmarc(resolver, "sub.example.test", spf("fail", "x.test"), [], org)
    assert got.result == "temperror"
    # the organisational lookup failing matters too
    resolver = FakeResolver({}, fail={"_dmarc.example.test"})
    assert (await check_dmarc(resolver, "a.example.test", None, [], org)).result == "temperror"


async def test_lookup_order(org: OrganizationalDomains) -> None:
    resolver = FakeResolver(ZONE)
    await check_dmarc(resolver, "deep.news.example.test", None, [], org)
    assert resolver.queries == [("_dmarc.deep.news.example.test", "TXT"), ("_dmarc.example.test", "TXT")]
