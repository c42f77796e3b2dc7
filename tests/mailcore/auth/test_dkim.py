"""mailcore/auth/dkim.py: verification of every signature (public vectors), signing, key generation."""

from __future__ import annotations

import base64
import re
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from mailcore.auth.dkim import (
    MAX_RSA_BITS,
    MAX_RSA_EXPONENT_BITS,
    MAX_SIGNATURES,
    MAX_SIGNED_FIELDS,
    MAX_TAG_VALUE,
    MAX_WSP_RUN,
    DKIMResult,
    generate_key,
    pre_relax,
    rsa_key_too_costly,
    sign_message,
    verify_dkim,
)
from mailcore.dns.fake import FakeResolver
from mailcore.lineends import normalize_crlf
from tests.hangguard import no_hang
from tests.mailcore.auth.vectors import DATA, read_mail_auth, rsa_key_record
from tests.mailcore.conftest import resolver_for

DKIMPY = DATA / "dkim" / "dkimpy"
MAIL_AUTH = DATA / "dkim" / "mail-auth"

# The RFC 8463 §A.2 example key (mail-auth 001) and dkimpy's RSA test key, for RFC 6376/8463 examples.
FOOTBALL = {
    "brisbane._domainkey.football.example.com":
        {"TXT": ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]},
    "test._domainkey.football.example.com": {"TXT": [(DKIMPY / "test.txt").read_text().strip()]},
}


def _results(results: list[DKIMResult]) -> list[tuple[str, str, str]]:
    return [(r.result, r.domain, r.algorithm) for r in results]


@pytest.mark.parametrize(("vector", "expected"), [
    ("001.txt", [("pass", "football.example.com", "ed25519-sha256"),
                 ("pass", "football.example.com", "rsa-sha256")]),
    ("002.txt", [("pass", "example.com", "rsa-sha256")]),
    ("003.txt", [("pass", "ietf.org", "rsa-sha256"), ("pass", "ietf.org", "rsa-sha256")]),
    ("004.txt", [("pass", "facebookmail.com", "rsa-sha256")]),
    # x= lies in the past: the signature is not processed (RFC 6376 §3.5 x=, RFC 8601 §2.7.1)
    ("005.txt", [("neutral", "topicbox.com", "rsa-sha256")]),
    ("006.txt", [("pass", "github.com", "rsa-sha256")]),
])
async def test_mail_auth_vectors(vector: str, expected: list[tuple[str, str, str]]) -> None:
    records, message = read_mail_auth(MAIL_AUTH / vector)
    results = await verify_dkim(FakeResolver(records), message)
    assert _results(results) == expected
    if expected[0][0] == "neutral":
        assert "x=" in results[0].reason


async def test_rfc6376_and_rfc8463_example_both_signatures_pass() -> None:
    message = (DKIMPY / "rfc6376.signed.msg").read_bytes()
    results = await verify_dkim(FakeResolver(FOOTBALL), message)
    assert [(r.result, r.selector, r.algorithm, r.identity) for r in results] == [
        ("pass", "brisbane", "ed25519-sha256", "@football.example.com"),
        ("pass", "test", "rsa-sha256", "@football.example.com"),
    ]


async def test_body_modified_fails() -> None:
    message = (DKIMPY / "rfc6376.signed.msg").read_bytes().replace(b"We lost the game", b"We won the game")
    results = await verify_dkim(FakeResolver(FOOTBALL), message)
    assert [(r.result, r.reason) for r in results] == [("fail", "body hash did not verify")] * 2


async def test_signed_header_modified_fails() -> None:
    message = (DKIMPY / "rfc6376.signed.msg").read_bytes().replace(b"Is dinner ready?", b"Is lunch ready?")
    assert {r.result for r in await verify_dkim(FakeResolver(FOOTBALL), message)} == {"fail"}


@pytest.mark.parametrize(("key_record", "fake_kwargs", "result"), [
    (None, {}, "permerror"),                                    # NXDOMAIN: RFC 6376 §6.1.2 step 3
    ("v=DKIM1; k=rsa; p=", {}, "permerror"),                    # revoked: step 6
    ("v=DKIM1; k=rsa; p=notbase64!", {}, "permerror"),          # unparsable: step 7
    ("v=DKIM2; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCB", {}, "permerror"),  # bad version: step 4
    (FOOTBALL["test._domainkey.football.example.com"]["TXT"][0] + "; s=other", {}, "permerror"),  # s= not email
    (None, {"timeout": {"test._domainkey.football.example.com"}}, "temperror"),  # step 3: temporary
    (None, {"fail": {"test._domainkey.football.example.com"}}, "temperror"),     # SERVFAIL
])
async def test_key_problems(key_record: str | None, fake_kwargs: dict, result: str) -> None:
    records = dict(FOOTBALL)
    del records["test._domainkey.football.example.com"]
    if key_record is not None:
        records["test._domainkey.football.example.com"] = {"TXT": [key_record]}
    results = await verify_dkim(FakeResolver(records, **fake_kwargs), (DKIMPY / "rfc6376.signed.msg").read_bytes())
    assert results[0].result == "pass"  # the other signature is unaffected
    assert (results[1].result, results[1].selector) == (result, "test")
    assert results[1].reason


async def test_unsigned_and_malformed_signatures() -> None:
    assert _results(await verify_dkim(FakeResolver(), (DKIMPY / "test.message").read_bytes())) == [
        ("none", "", "")]
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test\r\n" + (DKIMPY / "test.message").read_bytes()
    [result] = await verify_dkim(FakeResolver(), broken)
    assert (result.result, result.domain) == ("neutral", "example.test")
    garbage = b"DKIM-Signature: ;;==;;\r\n" + (DKIMPY / "test.message").read_bytes()
    assert (await verify_dkim(FakeResolver(), garbage))[0].result == "neutral"


async def test_dkimpy_keys_sign_and_verify() -> None:
    """dkimpy's RSA test key (PKCS#1 PEM) and ed25519 test key (raw seed) with their DNS records."""
    message = (DKIMPY / "test.message").read_bytes()
    seed = base64.b64decode((DKIMPY / "ed25519test.key").read_text().strip())
    ed_pem = ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    records = {"rsa._domainkey.example.com": {"TXT": [(DKIMPY / "test.txt").read_text().strip()]},
               "ed._domainkey.example.com": {"TXT": [(DKIMPY / "ed25519test.dns").read_text().strip()]}}
    signed = normalize_crlf(message)
    signed = sign_message(signed, "example.com", "rsa", (DKIMPY / "test.private").read_bytes()) + signed
    signed = sign_message(signed, "example.com", "ed", ed_pem, "ed25519-sha256") + signed
    assert _results(await verify_dkim(FakeResolver(records), signed)) == [
        ("pass", "example.com", "ed25519-sha256"), ("pass", "example.com", "rsa-sha256")]


MESSAGE = (b"From: Alice <alice@example.test>\nTo: bob@example.test\nSubject: hello\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.test>\n"
           b"Received: from somewhere\n\nHello Bob.\n.dot line\n\n\n")


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_sign_then_verify_round_trip(algorithm: str) -> None:
    private_pem, txt = generate_key(algorithm)
    assert txt.startswith(f"v=DKIM1; k={algorithm}; p=")
    header = sign_message(MESSAGE, "example.test", "s1", private_pem, algorithm)
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert b"\n" not in header.replace(b"\r\n", b"")
    assert b"c=relaxed/relaxed" in header
    h_tag = b"".join(header.split(b"h=")[1].split(b";")[0].split())
    assert h_tag == b"from:to:subject:date:message-id:from"  # From oversigned, Received not signed
    resolver = FakeResolver({"s1._domainkey.example.test": {"TXT": [txt]}})
    signed = header + normalize_crlf(MESSAGE)
    [result] = await verify_dkim(resolver, signed)
    assert (result.result, result.domain, result.selector) == ("pass", "example.test", "s1")
    # an added From breaks it (oversigning), as does a changed body
    assert (await verify_dkim(resolver, header + b"From: mallory@evil.test\r\n" + normalize_crlf(MESSAGE)))[0].result == "fail"
    assert (await verify_dkim(resolver, signed.replace(b"Hello Bob", b"Hello Eve")))[0].result == "fail"
    # relaxed/relaxed survives whitespace changes in transit
    assert (await verify_dkim(resolver, signed.replace(b"Subject: hello", b"Subject:  hello")))[0].result == "pass"


# The message as stored, and as SMTP carries it: RFC 6376 §5.3 has the signer turn every bare CR and
# bare LF into CRLF first, so the signature must verify on the second and, where they differ, not on
# a form that kept the bare character.
@pytest.mark.parametrize(("stored", "as_sent"), [
    pytest.param(b"From: a@example.test\r\nSubject: s\r\n\r\none\rtwo\r\n",
                 b"From: a@example.test\r\nSubject: s\r\n\r\none\r\ntwo\r\n", id="bare CR in the body"),
    pytest.param(b"From: a@example.test\nSubject: s\n\nbody\n",
                 b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n", id="bare LF everywhere"),
    pytest.param(b"From: a@example.test\r\nSubject: a\r b\r\n\r\nbody\r\n",
                 b"From: a@example.test\r\nSubject: a\r\n b\r\n\r\nbody\r\n", id="bare CR folds a header"),
    pytest.param(b"From: a@example.test\r\n\r\nx\r\r\ny\r",
                 b"From: a@example.test\r\n\r\nx\r\n\r\ny\r\n", id="CR CR LF, and CR at the end"),
])
async def test_bare_cr_and_lf_are_signed_as_crlf(stored: bytes, as_sent: bytes) -> None:
    private_pem, txt = generate_key("ed25519")
    resolver = FakeResolver({"s1._domainkey.example.test": {"TXT": [txt]}})
    header = sign_message(stored, "example.test", "s1", private_pem, "ed25519")
    assert (await verify_dkim(resolver, header + as_sent))[0].result == "pass"
    kept_cr = stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # bare LFs fixed, bare CRs kept
    if kept_cr != as_sent:
        assert (await verify_dkim(resolver, header + kept_cr))[0].result == "fail"


async def test_a_key_is_parsed_once_and_a_new_key_is_used_at_once() -> None:
    """The queue signs every message of a domain with one key: its PEM is loaded once, not per message
    (loading validates the key, ~85 ms for RSA-2048); a rotated key is a new PEM and signs at once."""
    from mailcore.auth.dkim import _private_key_for_dkimpy
    old_pem, old_txt = generate_key("rsa", 1024)
    new_pem, new_txt = generate_key("rsa", 1024)
    sign_message(MESSAGE, "example.test", "s1", old_pem)
    before = _private_key_for_dkimpy.cache_info()
    sign_message(MESSAGE, "example.test", "s1", old_pem)
    after = _private_key_for_dkimpy.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    header = sign_message(MESSAGE, "example.test", "s1", new_pem)
    for txt, expected in ((new_txt, "pass"), (old_txt, "fail")):
        resolver = FakeResolver({"s1._domainkey.example.test": {"TXT": [txt]}})
        [result] = await verify_dkim(resolver, header + normalize_crlf(MESSAGE), minkey=1024)
        assert result.result == expected


def test_sign_rejects_bad_input() -> None:
    rsa_pem, _ = generate_key("rsa", 1024)
    ed_pem, _ = generate_key("ed25519")
    with pytest.raises(ValueError):
        sign_message(MESSAGE, "example.test", "s", rsa_pem, "ed25519-sha256")
    with pytest.raises(ValueError):
        sign_message(MESSAGE, "example.test", "s", ed_pem, "rsa-sha256")
    with pytest.raises(ValueError):
        sign_message(MESSAGE, "example.test", "s", rsa_pem, "rsa-sha1")
    with pytest.raises(ValueError):
        sign_message(b"To: x@example.test\n\nbody\n", "example.test", "s", rsa_pem)
    with pytest.raises(ValueError):
        generate_key("rsa", 512)
    with pytest.raises(ValueError):
        generate_key("dsa")


@pytest.mark.parametrize("raw", [
    b" continued\r\nFrom: a@example.test\r\n\r\nbody\r\n",  # a continuation line first
    b"Fr\xc3\xb6m: x\r\nFrom: a@example.test\r\n\r\nbody\r\n",  # an 8-bit field name
], ids=["continuation-first", "8bit-name"])
def test_sign_refuses_a_header_dkimpy_cannot_read_with_valueerror(raw: bytes) -> None:
    """dkimpy's own IndexError and MessageFormatError escaped as themselves, not the documented
    ValueError the outbound worker turns into "send unsigned"."""
    pem, _ = generate_key("ed25519")
    with pytest.raises(ValueError, match="unreadable for DKIM"):
        sign_message(raw, "example.test", "s1", pem, "ed25519-sha256")


async def test_an_internationalised_signing_domain_signs_as_its_a_label() -> None:
    """d= carries the A-label (RFC 6376 §3.5; U-labels there need RFC 8616 and SMTPUTF8): a U-label
    domain made `domain.encode('ascii')` raise UnicodeEncodeError."""
    pem, record = generate_key("ed25519")
    raw = b"From: a@xn--bcher-kva.example\r\nSubject: s\r\n\r\nbody\r\n"
    header = sign_message(raw, "B\u00fccher.example", "s1", pem, "ed25519-sha256")
    assert b"d=xn--bcher-kva.example;" in header
    [result] = await verify_dkim(FakeResolver({"s1._domainkey.xn--bcher-kva.example": {"TXT": [record]}}),
                                 header + raw)
    assert result.result == "pass"


class _Recording(FakeResolver):
    threads: set[int]

    async def txt(self, name: str) -> list[str]:
        self.threads.add(threading.get_ident())
        return await super().txt(name)


async def test_key_lookups_on_the_loop_thread() -> None:
    resolver = _Recording(FOOTBALL)
    resolver.threads = set()
    await verify_dkim(resolver, (DKIMPY / "rfc6376.signed.msg").read_bytes())
    assert resolver.threads == {threading.get_ident()}


async def test_end_to_end_over_loopback_dns_with_a_2048_bit_key(dns_server) -> None:
    private_pem, txt = generate_key("rsa", 2048)
    server = dns_server({"big._domainkey.example.test": {"TXT": [txt]}},
                        drop={"slow._domainkey.example.test"})
    resolver = resolver_for(server, timeout=0.3)
    signed = sign_message(MESSAGE, "example.test", "big", private_pem) + normalize_crlf(MESSAGE)
    assert (await verify_dkim(resolver, signed))[0].result == "pass"
    slow = sign_message(MESSAGE, "example.test", "slow", private_pem) + normalize_crlf(MESSAGE)
    assert (await verify_dkim(resolver, slow))[0].result == "temperror"
    missing = sign_message(MESSAGE, "example.test", "gone", private_pem) + normalize_crlf(MESSAGE)
    assert (await verify_dkim(resolver, missing))[0].result == "permerror"


def _dkimpy_signed(pem: str, algorithm: bytes) -> bytes:
    """A message signed by dkimpy directly (which still signs rsa-sha1, unlike `sign_message`)."""
    import dkim as dkimpy
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    raw = normalize_crlf(b"From: a@example.test\nTo: b@ours.test\nSubject: s\n\nbody\n")
    return dkimpy.sign(raw, b"s1", b"example.test", key, signature_algorithm=algorithm) + raw


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    return generate_key("rsa", 1024)


async def test_rsa_sha1_is_never_a_pass(rsa_key: tuple[str, str]) -> None:
    # RFC 8301 §3.1: rsa-sha1 "MUST NOT be used for signing or verifying"; dkimpy alone would pass it.
    pem, txt = rsa_key
    message = _dkimpy_signed(pem, b"rsa-sha1")
    (result,) = await verify_dkim(FakeResolver({"s1._domainkey.example.test": {"TXT": [txt]}}), message)
    assert (result.result, result.algorithm) == ("permerror", "rsa-sha1")
    assert "RFC 8301" in result.reason


@pytest.mark.parametrize(("h", "expected"), [
    ("sha256", "pass"), ("sha1:sha256", "pass"), ("SHA256", "pass"),
    ("sha1", "permerror"),  # RFC 6376 §3.6.1 h=: the key does not allow the signature's hash
])
async def test_key_h_tag_limits_the_hash(rsa_key: tuple[str, str], h: str, expected: str) -> None:
    pem, txt = rsa_key
    record = txt.replace("v=DKIM1; ", f"v=DKIM1; h={h}; ")
    message = _dkimpy_signed(pem, b"rsa-sha256")
    (result,) = await verify_dkim(FakeResolver({"s1._domainkey.example.test": {"TXT": [record]}}), message)
    assert result.result == expected
    if expected == "permerror":
        assert "h=" in result.reason


def test_public_record_matches_generated_key(rsa_key: tuple[str, str]) -> None:
    from mailcore.auth.dkim import public_record

    pem, txt = rsa_key
    assert public_record(pem) == txt
    ed_pem, ed_txt = generate_key("ed25519")
    assert public_record(ed_pem) == ed_txt and ed_txt.startswith("v=DKIM1; k=ed25519; p=")


def _tampered(pattern: bytes, replacement: bytes) -> bytes:
    """dkimpy's RSA-signed RFC 6376 example with its RSA signature's tags changed."""
    message = (DKIMPY / "rfc6376.signed.msg").read_bytes()
    start = message.index(b"DKIM-Signature: v=1; a=rsa-sha256")
    end = message.index(b"\nFrom: ", start)
    signature = re.sub(pattern, replacement, message[start:end], count=1)
    return message[:start] + signature + message[end:]


@pytest.mark.parametrize(("pattern", "replacement"), [
    (rb"d=", b"x=" + b"9" * 5000 + b"; d="),           # int() refuses over 4300 digits: ValueError
    (rb"t=\d+", b"t=" + b"1" * 5000),
    (rb"bh=[^;]*;", b"bh=a===;"),                      # binascii.Error once the key is found
    (rb" b=[^;]*$", b" b=a==="),
], ids=["x-digits", "t-digits", "bh-padding", "b-padding"])
async def test_hostile_tag_values_are_neutral_not_a_crash(pattern: bytes, replacement: bytes) -> None:
    results = await verify_dkim(FakeResolver(FOOTBALL), _tampered(pattern, replacement))
    assert [(r.result, r.selector) for r in results] == [("pass", "brisbane"), ("neutral", "test")]
    assert results[1].reason == "signature could not be processed"


async def test_header_block_starting_with_a_continuation_is_permerror() -> None:
    # dkimpy's parser appends a continuation to the previous field: for the first line, an IndexError.
    message = b" folded\r\n" + (DKIMPY / "rfc6376.signed.msg").read_bytes()
    [result] = await verify_dkim(FakeResolver(FOOTBALL), message)
    assert result.result == "permerror" and "unparsable" in result.reason


@pytest.mark.parametrize(("record", "why"), [
    (rsa_key_record(2048, 65), "RSA public exponent over 64 bits"),
    (rsa_key_record(16392, 17), "RSA modulus over 16384 bits"),
])
async def test_keys_too_costly_to_verify_with_are_refused(record: str, why: str) -> None:
    """dkimpy's RSA is Python's pow(), which holds the GIL: a long exponent stalls the loop thread."""
    records = {**FOOTBALL, "test._domainkey.football.example.com": {"TXT": [record]}}
    results = await verify_dkim(FakeResolver(records), (DKIMPY / "rfc6376.signed.msg").read_bytes())
    assert [r.result for r in results] == ["pass", "permerror"]
    assert results[1].reason == f"key at test._domainkey.football.example.com refused: {why}"


def test_usual_keys_still_verify_at_the_bounds() -> None:
    assert rsa_key_too_costly({"modulus": 1 << (MAX_RSA_BITS - 1), "publicExponent": 65537}, b"rsa") == ""
    assert rsa_key_too_costly({"modulus": 3, "publicExponent": 1 << (MAX_RSA_EXPONENT_BITS - 1)}, b"rsa") == ""


async def test_at_most_max_signatures_are_verified() -> None:
    """RFC 6376 §6.1: a verifier MAY limit the signatures it tries. 200 copies of one signature were 200
    key lookups, body hashes and RSA verifications."""
    message = (DKIMPY / "rfc6376.signed.msg").read_bytes()
    start = message.index(b"DKIM-Signature: v=1; a=rsa-sha256")
    end = message.index(b"\nFrom: ", start) + 1
    resolver = FakeResolver(FOOTBALL)
    results = await verify_dkim(resolver, message[start:end] * 200 + message)
    assert [r.result for r in results] == ["pass"] * MAX_SIGNATURES + ["policy"]
    assert results[-1].reason == f"{202 - MAX_SIGNATURES} more signatures not evaluated (at most {MAX_SIGNATURES})"
    assert len(resolver.queries) == MAX_SIGNATURES


@pytest.mark.parametrize(("names", "result"), [(MAX_SIGNED_FIELDS, "fail"), (MAX_SIGNED_FIELDS + 1, "neutral")])
async def test_h_listing_too_many_fields_is_neutral_unverified(names: int, result: str) -> None:
    """dkimpy scans the whole header block for each name of h=: 5,000 names over 20,000 fields were 10 s."""
    private, public = generate_key("ed25519")
    raw = normalize_crlf(b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n")
    signature = sign_message(raw, "example.test", "s1", private, "ed25519-sha256")
    listed = b":".join([b"from", *(b"x-%d" % i for i in range(names - 1))])
    signature = re.sub(rb"h=[^;]*;", lambda m: b"h=" + listed + b";", signature, count=1)
    resolver = FakeResolver({"s1._domainkey.example.test": {"TXT": [public]}})
    [verdict] = await verify_dkim(resolver, signature + raw)
    assert verdict.result == result  # "fail": the names changed what is signed, but it was verified
    assert bool(resolver.queries) is (result == "fail")


SPACES_BODY = (b" " * 4000 + b"x\r\n") * 1000  # dkimpy's pattern: minutes; pre_relax: milliseconds


async def test_relaxed_body_with_long_space_runs_is_linear() -> None:
    """dkimpy's relaxed body pattern [\\t ]+\\r\\n is quadratic in a run of spaces not ending a line (5 s
    with the GIL held for a 1 MB body of 990-space runs, over a minute for this one); the runs are made
    single spaces first, with the same result."""
    private, public = generate_key("ed25519")
    raw = normalize_crlf(b"From: a@example.test\r\nSubject: s\r\n\r\n" + SPACES_BODY)
    signed = sign_message(raw, "example.test", "s1", private, "ed25519-sha256") + raw
    resolver = FakeResolver({"s1._domainkey.example.test": {"TXT": [public]}})
    with no_hang():
        [result] = await verify_dkim(resolver, signed)
    assert result.result == "pass"
    [changed] = await verify_dkim(resolver, signed.replace(b" x\r\n", b"  y\r\n", 1))
    assert (changed.result, changed.reason) == ("fail", "body hash did not verify")


FOLDED_SPACES = b"\r\n".join([b""] + [b" " * 900] * 100)  # one 90,000-character run: minutes in dkimpy


@pytest.mark.parametrize(("pattern", "replacement", "reason"), [
    (rb" b=[^;]*$", b" b=A" + FOLDED_SPACES + b"!",
     f"b= folds with more than {MAX_WSP_RUN} white space characters in a row"),
    (rb"h=", b"h=from" + FOLDED_SPACES + b"x:", f"h= folds with more than {MAX_WSP_RUN} white space characters in a row"),
    (rb"bh=", b"bh=" + b"A" * (MAX_TAG_VALUE + 4), f"bh= is longer than {MAX_TAG_VALUE} characters"),
], ids=["b-spaces", "h-spaces", "bh-long"])
async def test_tags_dkimpy_would_match_in_quadratic_time_are_neutral(pattern: bytes, replacement: bytes,
                                                                     reason: str) -> None:
    """dkimpy's b= check and h= split retry every position of a white space run: 10,000 spaces held the
    GIL 1.2 s before any key lookup."""
    with no_hang():
        results = await verify_dkim(FakeResolver(FOOTBALL), _tampered(pattern, replacement))
    assert [(r.result, r.reason) for r in results][1] == ("neutral", reason)


@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"=", b"  \t "]), max_size=80))
def test_pre_relax_gives_dkimpys_relaxed_body(pieces: list[bytes]) -> None:
    """RFC 6376 §3.4.4: dkimpy's relaxed canonicalisation of the pre-relaxed body is that of the body."""
    body = b"".join(pieces)
    assert Relaxed.canonicalize_body(pre_relax(body)) == Relaxed.canonicalize_body(body)
