"""mailcore.auth.signing: which domains may sign a queued message, best first (pure: no loop, no database).

The end-to-end proof, signatures verified at a sink against keys served by a loopback DNS server, is in
test_dkim.py; this is the table of header shapes, and any header at all never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.auth.signing import MAX_FROM_CANDIDATES, author_domain, candidates, host_domains

BODY = b"\r\nthe body\r\n"

# (case, header block, envelope sender, submitted by an account of ours, candidates)
CASES = [
    ("from-then-envelope-same-organisation", b"From: <a@news.ours.example>\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("from-parents-to-the-organisational-domain", b"From: a@mail.eu.ours.example\r\n", "s@ours.example", True,
     ["mail.eu.ours.example", "eu.ours.example", "ours.example"]),
    ("not-above-the-organisational-domain", b"From: a@x.y.co.uk\r\n", "s@y.co.uk", True, ["x.y.co.uk", "y.co.uk"]),
    ("same-domain-once", b"From: A <a@Ours.Example>\r\n", "s@ours.example", True, ["ours.example"]),
    # a From in another organisation (another tenant hosted here, say) is only the account's word: the
    # envelope sender, which submission checked the account may use, signs
    ("from-in-another-organisation", b"From: <ceo@brand.example>\r\n", "s@ours.example", True, ["ours.example"]),
    ("from-under-a-public-suffix-elsewhere", b"From: a@x.y.co.uk\r\n", "s@z.co.uk", True, ["z.co.uk"]),
    # mail no account of ours submitted (relayed from the MX to an alias elsewhere) is not ours to sign
    ("relayed", b"From: <ceo@brand.example>\r\n", "s@far.test", False, []),
    ("relayed-with-our-envelope-domain", b"From: <ceo@ours.example>\r\n", "ceo@ours.example", False, []),
    ("null-sender", b"From: <a@brand.example>\r\n", "", True, []),
    ("null-sender-relayed", b"From: <a@brand.example>\r\n", "", False, []),
    ("no-from", b"Subject: none\r\n", "s@ours.example", True, []),
    ("two-from-fields", b"From: a@ours.example\r\nFrom: b@ours.example\r\n", "s@ours.example", True,
     ["ours.example"]),
    ("two-domains-in-from", b"From: a@news.ours.example, b@other.example\r\n", "s@ours.example", True,
     ["ours.example"]),
    ("two-addresses-one-domain", b"From: a@news.ours.example, b@news.ours.example\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("group-syntax", b"From: team: a@news.ours.example;\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("folded", b"From: A Long Name\r\n <a@news.ours.example>\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("no-at", b"From: nobody\r\n", "s@ours.example", True, ["ours.example"]),
    ("empty", b"From:\r\n", "s@ours.example", True, ["ours.example"]),
    # read as leniently as our own DMARC check reads From (mailcore.auth.dmarc.from_header_domain)
    ("unbalanced", b"From: <<a@@news.ours.example\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("address-literal", b"From: a@[192.0.2.1]\r\n", "s@ours.example", True, ["ours.example"]),
    ("ip-address", b"From: a@192.0.2.1\r\n", "s@ours.example", True, ["ours.example"]),
    ("u-label", "From: j@bücher.example\r\n".encode(), "s@xn--bcher-kva.example", True, ["xn--bcher-kva.example"]),
    ("undecodable-bytes", b"From: \xff@\xc3\x28.example\r\n", "s@ours.example", True, ["ours.example"]),
    ("encoded-word-name", b"From: =?utf-8?q?J=C3=BCrgen?= <j@news.ours.example>\r\n", "s@ours.example", True,
     ["news.ours.example", "ours.example"]),
    ("envelope-u-label", b"From: a@news.xn--bcher-kva.example\r\n", "s@bücher.example", True,
     ["news.xn--bcher-kva.example", "xn--bcher-kva.example"]),
    ("envelope-garbage", b"From: a@ours.example\r\n", "no-at-sign", True, []),
]


@pytest.mark.parametrize(("head", "sender", "trust", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_candidates(head: bytes, sender: str, trust: bool, expected: list[str]) -> None:
    assert candidates(head + BODY, sender, submitted=trust) == expected


def test_host_domains_of_the_dsn_from() -> None:
    assert host_domains("mx.ours.example") == ["mx.ours.example", "ours.example"]
    assert host_domains("localhost") == ["localhost"]
    assert host_domains("not a name") == []


def test_a_long_made_up_name_is_bounded() -> None:
    name = ".".join(["x"] * 40) + ".brand.example"
    assert len(host_domains(name)) == MAX_FROM_CANDIDATES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=60))
def test_any_from_field_never_raises(value: bytes, sender: str) -> None:
    raw = b"From: " + value + b"\r\nSubject: x\r\n" + BODY
    assert author_domain(raw) is None or "." in author_domain(raw) or author_domain(raw) == "localhost"
    assert isinstance(candidates(raw, sender, submitted=True), list)
