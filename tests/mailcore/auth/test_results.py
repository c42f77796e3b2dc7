"""mailcore/auth/results.py: the Authentication-Results value (RFC 8601) and removing forged ones."""

from __future__ import annotations

import pytest

from mailcore.auth.arc import ARCResult
from mailcore.auth.dkim import DKIMResult
from mailcore.auth.dmarc import DMARCRecord, DMARCResult
from mailcore.auth.results import (
    MAX_LENGTH,
    MAX_VALUE,
    authentication_results,
    header_field,
    remove_own_results,
)
from mailcore.auth.spf import SPFResult
from tests.hangguard import no_hang

SPF = SPFResult("pass", "example.test", "", "domain of example.test designates 192.0.2.1 as permitted sender")
DKIM = [DKIMResult("pass", "example.test", "s1", "rsa-sha256", "", "@example.test")]
DMARC = DMARCResult("pass", "none", "example.test", "example.test", "aligned", "reject",
                    record=DMARCRecord(p="reject"))


def outside_comments(value: str) -> str:
    """`value` with its comments (RFC 5322 §3.2.2, nested, with quoted-pairs) removed and runs of spaces
    made one; quoted-strings kept. Fails when a comment or quoted-string is left open: the rest of the field would be lost in it."""
    out: list[str] = []
    depth, quoted, i = 0, False, 0
    while i < len(value):
        char = value[i]
        if char == "\\" and (depth or quoted):
            if depth == 0:
                out.append(value[i:i + 2])
            i += 2
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
        i += 1
    assert depth == 0 and not quoted, f"unclosed comment or quoted-string in {value!r}"
    return " ".join("".join(out).split())


def test_all_pass() -> None:
    value = authentication_results("mx.ours.test", SPF, DKIM, DMARC, ARCResult("none"),
                                   mail_from="alice@example.test", helo="client.example.test")
    assert value == (
        "mx.ours.test; "
        "spf=pass (domain of example.test designates 192.0.2.1 as permitted sender) "
        "smtp.mailfrom=alice@example.test; "
        "dkim=pass header.d=example.test header.i=@example.test header.s=s1 header.a=rsa-sha256; "
        "dmarc=pass (p=reject) header.from=example.test; "
        "arc=none")


def test_failures_none_and_helo() -> None:
    value = authentication_results(
        "mx.ours.test", SPFResult("none", "client.example.test", identity="helo"),
        [DKIMResult("fail", "a.test", "s", "ed25519-sha256", "body hash did not verify"),
         DKIMResult("permerror", "b.test", "t", "rsa-sha256", "no key for signature at t._domainkey.b.test")],
        DMARCResult("fail", "quarantine", "a.test", "a.test", "x", "reject", record=DMARCRecord(p="reject")),
        ARCResult("fail", "ARC-Seal[1] did not validate"), helo="client.example.test",
        dmarc_disposition="quarantine")
    assert "spf=none smtp.helo=client.example.test" in value
    assert 'dkim=fail reason="body hash did not verify" header.d=a.test header.s=s header.a=ed25519-sha256' in value
    assert "dkim=permerror reason=" in value
    assert "dmarc=fail (p=reject dis=quarantine) header.from=a.test" in value
    assert value.endswith("; arc=fail")
    assert authentication_results("x", None, [], None, None) == "x; dkim=none"


def test_peer_supplied_values_cannot_inject() -> None:
    value = authentication_results(
        "mx.ours.test", SPFResult("fail", "evil.test", "", "comment (with) parens\r\nX-Evil: 1"),
        [DKIMResult("neutral", "evil.test\r\nBcc: victim@example.test", "s\n", "rsa-sha256", 'bad "tag"\0')],
        None, None, mail_from="a b\r\nX-Injected: yes@evil.test")
    assert "\r" not in value and "\n" not in value and "\0" not in value
    assert 'smtp.mailfrom="a b X-Injected: yes@evil.test"' in value
    assert r"(comment \(with\) parens X-Evil: 1)" in value
    assert r'reason="bad \"tag\""' in value
    field = header_field(value)
    assert field.startswith(b"Authentication-Results: mx.ours.test;\r\n\tspf=fail")
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(line.startswith(b"\t") for line in lines[1:-1])


RAW = (b"Return-Path: <a@example.test>\r\n"
       b"Authentication-Results: MX.Ours.Test; spf=pass smtp.mailfrom=forged@example.test\r\n"
       b"Authentication-Results: other.test;\r\n\tdkim=pass header.d=example.test\r\n"
       b"Authentication-Results: (sneaky comment) mx.ours.test 1;\r\n dmarc=pass\r\n"
       b'Authentication-Results: "mx.ours.test"; arc=pass\r\n'
       b"Authentication-Results: mx.ours.test.evil.test; none\r\n"
       b"ARC-Authentication-Results: i=1; mx.ours.test; spf=pass\r\n"
       b"From: a@example.test\r\n\r\n"
       b"Authentication-Results: mx.ours.test; in the body stays\r\n")


def test_remove_own_results() -> None:
    out = remove_own_results(RAW, "mx.ours.test")
    assert out == (b"Return-Path: <a@example.test>\r\n"
                   b"Authentication-Results: other.test;\r\n\tdkim=pass header.d=example.test\r\n"
                   b"Authentication-Results: mx.ours.test.evil.test; none\r\n"
                   b"ARC-Authentication-Results: i=1; mx.ours.test; spf=pass\r\n"
                   b"From: a@example.test\r\n\r\n"
                   b"Authentication-Results: mx.ours.test; in the body stays\r\n")


@pytest.mark.parametrize(("value", "ours"), [
    ("((nested (comments)) \\) ) mx.ours.test; dmarc=pass", True),
    ("mx.ours.test(comment); dmarc=pass", True),
    ("(unclosed mx.ours.test; dmarc=pass", False),
    ("(a) (b)\t mx.ours.test.evil.test; dmarc=pass", False),
])
def test_authserv_id_after_comments(value: str, ours: bool) -> None:
    raw = f"Authentication-Results: {value}\r\nFrom: a@example.test\r\n\r\nbody\r\n".encode()
    assert (remove_own_results(raw, "mx.ours.test") == raw[raw.index(b"From:"):]) is ours


def test_authserv_id_is_linear_in_comment_depth() -> None:
    depth = 60_000  # the quadratic removal of innermost comments: 7 s at 15,000, minutes here
    raw = (b"Authentication-Results: " + b"(" * depth + b")" * depth + b" mx.ours.test; dmarc=pass\r\n"
           b"From: a@example.test\r\n\r\n")
    with no_hang():
        assert remove_own_results(raw, "mx.ours.test") == b"From: a@example.test\r\n\r\n"


@pytest.mark.parametrize("raw", [b"", b"From: a\n\nbody", b"no header block at all"])
def test_remove_own_results_leaves_other_messages_alone(raw: bytes) -> None:
    assert remove_own_results(raw, "mx.ours.test") == raw


def test_helo_identity_reported_beside_mail_from() -> None:
    helo = SPFResult("fail", "client.example.test", identity="helo")
    value = authentication_results("mx.ours.test", SPF, DKIM, None, None, mail_from="alice@example.test",
                                   helo="client.example.test", helo_spf=helo)
    assert "smtp.mailfrom=alice@example.test; spf=fail smtp.helo=client.example.test; dkim=pass" in value


@pytest.mark.parametrize(("comment", "shown"), [
    ("plain words", "(plain words)"),
    ("nested (and) \\ escaped", r"(nested \(and\) \\ escaped)"),
    ("\\(", r"(\\\()"),
    ("))((", r"(\)\)\(\()"),
])
def test_comment_escapes_its_delimiters(comment: str, shown: str) -> None:
    """RFC 5322 §3.2.2: inside a comment, ( ) and \\ are quoted-pairs, so peer text cannot end it."""
    value = authentication_results("mx.ours.test", SPFResult("none", "a.test", "", comment), [], None, None)
    assert f"spf=none {shown} smtp.helo=a.test" in value


@pytest.mark.parametrize("length", range(190, 215))
@pytest.mark.parametrize("char", ["(", ")", "\\"])
def test_long_comments_stay_closed(char: str, length: int) -> None:
    """A comment is cut to 200 characters before escaping: cut after, it could end in the backslash of an
    escaped "(", which then escaped the closing ")" and hid every later result in the comment."""
    helo = char * length
    value = authentication_results(
        "mx.ours.test", SPF, DKIM, DMARC, None, mail_from="a@example.test", helo=helo,
        helo_spf=SPFResult("none", helo, "", f"192.0.2.1 is neither permitted nor denied by domain of {helo}",
                           identity="helo"))
    assert "dmarc=pass header.from=example.test" in outside_comments(value)


def test_long_values_are_cut_and_marked() -> None:
    value = authentication_results("mx.ours.test", SPF, [DKIMResult("fail", "d" * 5000 + ".test", "s1")], DMARC,
                                   None, mail_from="a@" + "b" * 5000 + ".test")
    assert f'smtp.mailfrom="a@{"b" * (MAX_VALUE - 2)}..."' in value
    assert f'header.d="{"d" * MAX_VALUE}..."' in value


def test_many_long_dkim_results_leave_room_for_dmarc_and_arc() -> None:
    """smtp_in cuts the field at 4000 characters: DKIM results that do not fit are summed up in one,
    so DMARC's and ARC's results are never the ones lost."""
    dkim = [DKIMResult("fail", f"{i}-" + '"' * 300, "s" * 300, "rsa-sha256", "r" * 300, "@" + "i" * 300)
            for i in range(10)]
    value = authentication_results("mx.ours.test", SPF, dkim, DMARC, ARCResult("pass"),
                                   mail_from='"' * 300 + "@example.test")
    assert len(value) <= MAX_LENGTH + 60
    assert value.endswith("; dmarc=pass (p=reject) header.from=example.test; arc=pass")
    shown = value.count("dkim=fail")
    assert 0 < shown < 10
    assert f'dkim=policy reason="{10 - shown} more results not shown"' in value
    assert "dmarc=pass header.from=example.test" in outside_comments(value)
