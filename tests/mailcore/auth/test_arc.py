"""mailcore/auth/arc.py: the ValiMail ARC validation suite and the mail-auth ARC vectors, through our
layer (`verify_arc` with a `FakeResolver` holding each scenario's txt-records)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from mailcore.auth.arc import MAX_INSTANCES, ARCResult, verify_arc
from mailcore.dns.fake import FakeResolver
from mailcore.lineends import normalize_crlf
from tests.hangguard import no_hang
from tests.mailcore.auth.vectors import DATA, read_mail_auth, rsa_key_record
from tests.mailcore.conftest import resolver_for

SUITE = DATA / "arc" / "arc-draft-validation-tests.yml"

# The suite targets draft-ietf-dmarc-arc-protocol-18; where RFC 8617 decided otherwise we follow the RFC.
DRAFT_VS_RFC = (
    "the draft suite expects no chain status (empty cv) when the newest ARC-Seal says cv=fail; "
    "RFC 8617 §5.2 step 2 makes that chain 'fail', which is what we report"
)
XFAIL = {
    "cv_fail_i1_as_cv_fail": DRAFT_VS_RFC,
    "cv_fail_i2_as2_fail": DRAFT_VS_RFC,
    "cv_fail_i2_as1_fail": DRAFT_VS_RFC,
}


def _cases() -> list[Any]:
    cases = []
    with SUITE.open("rb") as fp:
        for scenario in yaml.safe_load_all(fp):
            records = {name: {"TXT": [value]} for name, value in (scenario.get("txt-records") or {}).items()}
            for test_id, test in scenario["tests"].items():
                expected = str(test["cv"]).strip().lower()
                marks = [pytest.mark.xfail(reason=XFAIL[test_id], strict=True)] if test_id in XFAIL else []
                cases.append(pytest.param(records, test["message"], expected, id=test_id, marks=marks))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("records", "message", "expected"), CASES)
async def test_valimail_suite(records: dict, message: str, expected: str, arc_suite_tally: dict[str, int]) -> None:
    result = await verify_arc(FakeResolver(records), message.encode("utf-8"))
    assert result.result == expected, result.reason
    arc_suite_tally["passed"] += 1


@pytest.mark.parametrize("test_id", sorted(XFAIL))
async def test_sealed_cv_fail_is_a_failed_chain_per_rfc8617(test_id: str) -> None:
    [(records, message, _)] = [c.values for c in CASES if c.id == test_id]
    result = await verify_arc(FakeResolver(records), message.encode("utf-8"))
    assert result.result == "fail"


def test_suite_is_complete() -> None:
    assert len(CASES) == 171


@pytest.mark.parametrize(("vector", "expected"), [
    ("001.txt", ("pass", ("google.com",))),
    pytest.param("002.txt", ("pass", ("manchego.org", "manchego.org")), marks=pytest.mark.xfail(
        strict=True, reason="dkimpy's ARC verifier knows only rsa-sha256 (dkim.crypto.ARC_HASH_ALGORITHMS); "
        "this chain's second hop is sealed with ed25519-sha256")),
])
async def test_mail_auth_vectors(vector: str, expected: tuple[str, tuple[str, ...]],
                                 arc_suite_tally: dict[str, int]) -> None:
    records, message = read_mail_auth(DATA / "arc" / "mail-auth" / vector)
    result = await verify_arc(FakeResolver(records), message)
    assert (result.result, result.domains) == expected, result.reason
    arc_suite_tally["passed"] += 1


async def test_unsealed_message_is_none() -> None:
    assert await verify_arc(FakeResolver(), b"From: a@example.test\r\n\r\nhi\r\n") == ARCResult(
        "none", "Message is not ARC signed", 0, ())


async def test_missing_and_unreachable_keys_fail(dns_server) -> None:
    records, message = read_mail_auth(DATA / "arc" / "mail-auth" / "001.txt")
    missing = await verify_arc(FakeResolver({}), message)
    assert missing.result == "fail"
    [google] = [name for name in records if name.endswith("google.com")]
    server = dns_server(records, drop={google})
    slow = await verify_arc(resolver_for(server, timeout=0.2), message)
    assert slow.result == "fail"
    assert "temporary DNS failure" in slow.reason
    server_ok = dns_server(records)
    assert (await verify_arc(resolver_for(server_ok), message)).result == "pass"


def _suite_pass_message() -> tuple[dict[str, Any], bytes]:
    with SUITE.open("rb") as fp:
        scenario = next(yaml.safe_load_all(fp))
    records = {name: {"TXT": [value]} for name, value in scenario["txt-records"].items()}
    return records, normalize_crlf(scenario["tests"]["cv_pass_i1_1"]["message"].encode())


def _ams_i_last(raw: bytes) -> bytes:
    """The AMS's i=1 moved to the end without its ';': dkimpy cannot find the raw field again."""
    raw = re.sub(rb"(ARC-Message-Signature:(?:.|\r\n\s)*?)\bi=1;", rb"\1", raw, count=1)
    return raw.replace(b"ARC-Message-Signature:", b"ARC-Message-Signature: i=1 ;", 1)


@pytest.mark.parametrize(("case", "change"), [
    ("continuation first", lambda raw: b" folded\r\n" + raw),                       # IndexError
    ("AMS i= not found again", _ams_i_last),                                          # IndexError
    ("x= of 5000 digits", lambda raw: raw.replace(b"cv=none;", b"cv=none; x=" + b"9" * 5000 + b";")),
    ("bh= bad padding", lambda raw: re.sub(rb"bh=[^;]*;", b"bh=a===;", raw, count=1)),  # binascii.Error
], ids=lambda value: value if isinstance(value, str) else "")
async def test_hostile_arc_sets_fail_not_crash(case: str, change: Any) -> None:
    records, raw = _suite_pass_message()
    assert (await verify_arc(FakeResolver(records), raw)).result == "pass"
    result = await verify_arc(FakeResolver(records), change(raw))
    assert (result.result, result.reason) == ("fail", "ARC set could not be processed")


async def test_seal_key_too_costly_to_verify_with_fails_the_chain() -> None:
    records, raw = _suite_pass_message()
    hostile = {name: {"TXT": [rsa_key_record(2048, 65)]} for name in records}
    result = await verify_arc(FakeResolver(hostile), raw)
    assert result.result == "fail"
    assert "key refused: dummy._domainkey.example.org: RSA public exponent over 64 bits" in result.reason


def _arc_sets(count: int) -> bytes:
    """`count` complete ARC sets (newest first) whose signatures name a key that exists."""
    sets = []
    for i in range(count, 0, -1):
        sets.append(f"ARC-Seal: i={i}; a=rsa-sha256; cv={'none' if i == 1 else 'pass'}; d=example.org; "
                    f"s=dummy; b=AAAA\r\n"
                    f"ARC-Message-Signature: i={i}; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=dummy; "
                    f"h=from; bh=AAAA; b=AAAA\r\n"
                    f"ARC-Authentication-Results: i={i}; example.org; spf=pass\r\n")
    return "".join(sets).encode()


@pytest.mark.parametrize(("count", "asked"), [(MAX_INSTANCES, True), (MAX_INSTANCES + 1, False)])
async def test_more_than_fifty_sets_fail_without_a_lookup(count: int, asked: bool) -> None:
    """RFC 8617 §4.2.1, §5.2: more than 50 sets is a failed chain, found before any key is asked for."""
    records, _ = _suite_pass_message()
    resolver = FakeResolver(records)
    result = await verify_arc(resolver, _arc_sets(count) + b"From: a@example.org\r\n\r\nhi\r\n")
    assert result.result == "fail"
    assert bool(resolver.queries) is asked
    assert (result.reason == f"more than {MAX_INSTANCES} ARC sets (RFC 8617 §4.2.1)") is not asked


async def test_relaxed_body_with_long_space_runs_is_linear() -> None:
    """The AMS's relaxed body canonicalisation went through dkimpy's quadratic pattern (see test_dkim)."""
    records, raw = _suite_pass_message()
    head = raw[:raw.index(b"\r\n\r\n") + 4]
    with no_hang():  # 5 s with 990-space runs before, over a minute with these
        result = await verify_arc(FakeResolver(records), head + (b" " * 4000 + b"x\r\n") * 1000)
    assert (result.result, result.reason) == ("fail", "Most recent ARC-Message-Signature did not validate")
