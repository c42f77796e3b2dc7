"""mailcore.dsn: the RFC 3464 structure, parsed back with the email package, and header safety."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from mailcore.dsn import RecipientReport, build_dsn, field_value, xtext

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
ORIGINAL = (b"From: Sender <s@ours.example>\r\nTo: r@far.example\r\nSubject: hello\r\n"
            b"Message-ID: <orig@ours.example>\r\n\r\nthe body\r\n")


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _status_blocks(msg: email.message.EmailMessage) -> list:
    part = [p for p in msg.iter_parts()][1]
    return part.get_payload()  # a list of header blocks (email parses message/delivery-status so)


def test_failure_dsn_structure() -> None:
    raw = build_dsn(reporting_mta="mx.ours.example", to="s@ours.example", now=NOW, original=ORIGINAL,
                    envid="ENV1", arrival_date=NOW - dt.timedelta(hours=1), reports=[
                        RecipientReport("r@far.example", "failed", "5.1.1", original_recipient="rfc822;R@far.example",
                                        remote_mta="mx1.far.example", diagnostic="550 5.1.1 no such user",
                                        last_attempt=NOW)])
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"].addresses[0].addr_spec == "s@ours.example"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.ours.example"
    assert msg["Auto-Submitted"] == "auto-replied"
    text, status, returned = msg.iter_parts()
    assert text.get_content_type() == "text/plain" and "r@far.example" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, rcpt = _status_blocks(msg)
    assert per_message["Reporting-MTA"] == "dns;mx.ours.example"
    assert per_message["Original-Envelope-Id"] == "ENV1"
    assert rcpt["Final-Recipient"] == "rfc822;r@far.example"
    assert rcpt["Original-Recipient"] == "rfc822;R@far.example"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns;mx1.far.example"
    assert rcpt["Diagnostic-Code"] == "smtp;550 5.1.1 no such user"
    # Without RET=FULL only the header comes back.
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: hello" in returned.get_payload(decode=True)
    assert b"the body" not in raw


def test_ret_full_returns_the_whole_message() -> None:
    raw = build_dsn(reporting_mta="h.example", to="s@ours.example", now=NOW, original=ORIGINAL, ret="FULL",
                    reports=[RecipientReport("r@far.example", "failed", "5.0.0")])
    returned = list(_parse(raw).iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "hello" and inner.get_content().strip() == "the body"


@pytest.mark.parametrize(("actions", "whole"), [
    (["failed"], True),
    (["delayed"], False),  # RFC 3461 §4.3: RET is about failed DSNs
    (["delivered"], False),
    (["relayed"], False),
    (["delayed", "failed"], True),  # one notice reporting a failure among others
])
def test_ret_full_returns_the_message_only_with_a_failure(actions: list[str], whole: bool) -> None:
    """A delay notice (sent again at each threshold) returned a RET=FULL message whole every time."""
    raw = build_dsn(reporting_mta="h.example", to="s@ours.example", now=NOW, original=ORIGINAL, ret="FULL",
                    reports=[RecipientReport(f"r{i}@far.example", a, "4.4.1" if a == "delayed" else "5.0.0")
                             for i, a in enumerate(actions)])
    returned = list(_parse(raw).iter_parts())[2]
    assert returned.get_content_type() == ("message/rfc822" if whole else "text/rfc822-headers")
    assert (b"the body" in raw) is whole


@pytest.mark.parametrize("evil", [
    "550 nope\r\nBcc: victim@x.example",
    "550 nope\nSubject: pwned",
    "550 nope\rX-Injected: 1",
    "550 nope\0X-Injected: 1",
])
def test_peer_values_cannot_add_header_lines(evil: str) -> None:
    raw = build_dsn(reporting_mta="h.example\r\nX-Evil: 1", to="s@x.example\r\nBcc: v@x.example", now=NOW,
                    original=ORIGINAL, envid="E\r\nX-Evil: 2",
                    reports=[RecipientReport("r@far.example\r\nX-Evil: 3", "failed", "5.0.0\r\nX: 4",
                                             remote_mta="mx\r\nX-Evil: 5", diagnostic=evil,
                                             original_recipient="rfc822;a@b\r\nX-Evil: 6")])
    msg = _parse(raw)
    for name in ("Bcc", "X-Evil", "X-Injected", "X"):
        assert msg[name] is None
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    for block in _status_blocks(msg):
        assert all(k in {"Reporting-MTA", "Original-Envelope-Id", "Final-Recipient", "Original-Recipient",
                         "Action", "Status", "Remote-MTA", "Diagnostic-Code"} for k in block.keys())
    assert b"\0" not in raw


def test_mixed_actions_and_utf8_recipient() -> None:
    raw = build_dsn(reporting_mta="h.example", to="s@ours.example", now=NOW, original=ORIGINAL, reports=[
        RecipientReport("ok@far.example", "delivered", "2.0.0"),
        RecipientReport("dé@far.example", "delayed", "4.4.1", will_retry_until=NOW),
    ])
    msg = _parse(raw)
    assert msg["Subject"].startswith("Delayed Mail")
    status = list(msg.iter_parts())[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert "utf-8;dé@far.example" in raw.decode("utf-8")


def test_field_value_and_xtext() -> None:
    assert field_value("a\r\n b\0c\x7f") == "a b c"
    assert len(field_value("x" * 5000)) == 900
    assert xtext("a+b=c d@x.example") == "a+2Bb+3Dc+20d@x.example"
    assert xtext("QQ\x7f~!") == "QQ+7F~!"


@pytest.mark.parametrize(("value", "clean"), [
    ("a\x85b\u2028c\u2029d", "a b c d"),      # NEL and the Unicode separators: line breaks to some readers
    ("red \x9b31m \x1b[0m", "red 31m [0m"),   # C1 CSI and ESC: escape sequences to a terminal
    ("caf\udce9", "caf\ufffd"),                # an undecodable byte kept by surrogateescape
])
def test_field_value_removes_c1_controls_separators_and_surrogates(value: str, clean: str) -> None:
    assert field_value(value) == clean
    field_value(value).encode("utf-8")


LONG_MX = ".".join(["a" * 63] * 3) + ".far.example"  # 253 octets, the longest DNS name


@pytest.mark.parametrize("report", [
    RecipientReport("r@far.example", "failed", "5.0.0", remote_mta=LONG_MX, diagnostic="550 " + "y" * 2000),
    RecipientReport("r@far.example", "delayed", "4.0.0", remote_mta=LONG_MX, diagnostic="451 " + "z " * 1000),
    RecipientReport("r" * 64 + "@" + LONG_MX, "failed", "5.0.0", original_recipient="rfc822;" + "o" * 490,
                    remote_mta=LONG_MX, diagnostic="550 " + "é" * 1000),
], ids=["long-reply", "long-spaced-reply", "long-utf8-everything"])
def test_every_line_fits_998_octets_with_long_peer_values(report: RecipientReport) -> None:
    # The human-readable part put the MX name and its reply, each cut on its own, on one line: 1114 octets.
    raw = build_dsn(reporting_mta=LONG_MX, to="s@ours.example", now=NOW, original=ORIGINAL, envid="E" * 100,
                    reports=[report])
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    text = list(_parse(raw).iter_parts())[0].get_content()
    assert f"{LONG_MX} said: " in text


@pytest.mark.parametrize(("value", "octets"), [
    ("é" * 1000, 900),          # two octets each: the cut was 900 characters, 1800 octets
    ("\udcff" * 1000, 900),     # undecodable peer bytes become U+FFFD, three octets each
    ("a" + "€" * 400, 898),     # never cut inside a character
], ids=["latin", "undecodable", "mid-character"])
def test_field_value_limit_counts_utf8_octets(value: str, octets: int) -> None:
    assert len(field_value(value).encode("utf-8")) == octets


UTF8_ORIGINAL = "From: Jörg <jörg@ours.example>\r\nTo: r@far.example\r\nSubject: grüße\r\n\r\nbody\r\n".encode()


@pytest.mark.parametrize(("original", "ret", "returned_type"), [
    (UTF8_ORIGINAL, "HDRS", "message/global-headers"),
    (UTF8_ORIGINAL, "FULL", "message/global"),
    (ORIGINAL, "HDRS", "text/rfc822-headers"),
    (ORIGINAL, "FULL", "message/rfc822"),
    (ORIGINAL.replace(b"the body", "the bödy".encode()), "FULL", "message/rfc822"),  # 8BITMIME body only
], ids=["utf8-header-hdrs", "utf8-header-full", "ascii-hdrs", "ascii-full", "8bit-body-full"])
@pytest.mark.parametrize("recipient", ["r@far.example", "ré@far.example"])
def test_returned_type_follows_the_original_header(original: bytes, ret: str, returned_type: str,
                                                   recipient: str) -> None:
    # An SMTPUTF8 message to an ASCII recipient came back as text/rfc822-headers (US-ASCII) or as
    # message/rfc822 with UTF-8 header fields: the type looked only at the recipients' addresses.
    raw = build_dsn(reporting_mta="h.example", to="s@ours.example", now=NOW, original=original, ret=ret,
                    reports=[RecipientReport(recipient, "failed", "5.0.0")])
    returned = list(_parse(raw).iter_parts())[2]
    assert returned.get_content_type() == returned_type
    assert returned["Content-Transfer-Encoding"] == ("8bit" if not original.isascii() else None)
    assert b"Subject: " in raw.split(f"Content-Type: {returned_type}\r\n".encode())[-1]


@pytest.mark.parametrize(("original", "header"), [
    (b"From: s@ours.example\r\nSubject: hello\r\nsecret line\r\n\r\nsecret paragraph\r\n",
     b"From: s@ours.example\r\nSubject: hello\r\n"),                         # no empty line after the header
    (b"From: s@ours.example\nSubject: hello\n\nsecret\r\n\r\nmore\r\n",
     b"From: s@ours.example\r\nSubject: hello\r\n"),                         # bare LF header, CRLF body
    (b"\r\nsecret\r\n\r\nmore\r\n", b""),                                    # no header at all
    (b"From: s@ours.example\r\nSubject: hello\r\n folded\r\n\r\nsecret\r\n",
     b"From: s@ours.example\r\nSubject: hello\r\n folded\r\n"),
    (b"From: s@ours.example\r\nSubject: hello", b"From: s@ours.example\r\nSubject: hello\r\n"),  # header only
], ids=["no-separator", "bare-lf-header", "no-header", "folded", "no-final-crlf"])
def test_ret_hdrs_returns_the_header_and_never_the_body(original: bytes, header: bytes) -> None:
    raw = build_dsn(reporting_mta="h.example", to="s@ours.example", now=NOW, original=original, ret="HDRS",
                    reports=[RecipientReport("r@far.example", "failed", "5.0.0")])
    assert b"secret" not in raw
    returned = list(_parse(raw).iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned.get_payload(decode=True) == header + b"\r\n"
