"""Sender authentication end to end: a real MX listener, a real PostgreSQL, and every DNS answer from the
loopback test DNS server through our real resolver. SPF, DKIM, DMARC and ARC results in the stored
Authentication-Results; DMARC reject/quarantine/none; forged results removed; DNS trouble gives 451."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import pytest
import yaml

from config.settings import DNSSettings, Settings
from mailcore import replies
from mailcore.auth.dkim import generate_key, sign_message
from mailcore.auth.dmarc import OrganizationalDomains
from mailcore.dns.resolver import Resolver
from mailcore.lineends import normalize_crlf
from smtp_in.senderauth import SenderAuthentication
from tests.dnsserver import DNSTestServer
from tests.mailcore.auth.vectors import rsa_key_record
from tests.smtp_in.harness import HOSTNAME, OTHER, USER, Server, make_settings, start_server
from tests.smtp_in.test_mx import code, inbox

ORG = OrganizationalDomains()
RSA_PEM, RSA_TXT = generate_key("rsa", 2048)
ED_PEM, ED_TXT = generate_key("ed25519")
ARC_SUITE = next(yaml.safe_load_all(
    (Path(__file__).parents[1] / "data" / "arc" / "arc-draft-validation-tests.yml").read_text()))
HELO = "client.remote.example"
HERE = "ip4:127.0.0.1"  # every test client connects from loopback

ZONE: dict[str, dict[str, Any]] = {
    HELO: {"TXT": [f"v=spf1 {HERE} -all"], "A": ["127.0.0.1"]},
    # SPF, one domain per result (RFC 7208 §2.6)
    "spf-pass.example": {"TXT": [f"v=spf1 {HERE} -all"]},
    "spf-fail.example": {"TXT": ["v=spf1 -all"]},
    "spf-soft.example": {"TXT": ["v=spf1 ~all"]},
    "spf-neutral.example": {"TXT": ["v=spf1 ?all"]},
    "spf-none.example": {"A": ["192.0.2.1"]},
    "spf-perm.example": {"TXT": [f"v=spf1 {HERE} frobnicate:x -all"]},
    # DKIM keys; no DMARC record for signed.example
    "signed.example": {"TXT": ["v=spf1 -all"]},
    "s1._domainkey.signed.example": {"TXT": [RSA_TXT]},
    "ed._domainkey.signed.example": {"TXT": [ED_TXT]},
    # a hostile zone's key: a 16384-bit modulus with a 4096-bit public exponent (Python's pow: ~3 s)
    "fat._domainkey.signed.example": {"TXT": [rsa_key_record(16384, 4096)]},
    # DMARC
    "reject.example": {"TXT": ["v=spf1 -all"]},
    "_dmarc.reject.example": {"TXT": ["v=DMARC1; p=reject"]},
    "quarantine.example": {"TXT": ["v=spf1 -all"]},
    "_dmarc.quarantine.example": {"TXT": ["v=DMARC1; p=quarantine"]},
    "none.example": {"TXT": [f"v=spf1 {HERE} -all"]},
    "mail.none.example": {"TXT": [f"v=spf1 {HERE} -all"]},
    "_dmarc.none.example": {"TXT": ["v=DMARC1; p=none"]},
    "spaces.example": {"TXT": ["v=spf1 -all"]},
    # bücher.example, in A-labels as DNS holds it
    "xn--bcher-kva.example": {"TXT": ["v=spf1 -all"]},
    "_dmarc.xn--bcher-kva.example": {"TXT": ["v=DMARC1; p=reject"]},
    "s1._domainkey.xn--bcher-kva.example": {"TXT": [RSA_TXT]},
    "_dmarc.spaces.example": {"TXT": ["v=DMARC1; p=quarantine; x=a" + " " * 30_000 + "b"]},  # over TCP
    "s1._domainkey.reject.example": {"TXT": [RSA_TXT]},
    # ARC sealer of the suite's messages
    **{name: {"TXT": [value]} for name, value in ARC_SUITE["txt-records"].items()},
    # DNS trouble
    "_dmarc.slow.example": {"TXT": ["v=DMARC1; p=reject"]},  # never answered: see `drop`
}
SERVFAIL = {"spf-temp.example", "broken._domainkey.reject.example"}
DROP = {"slow.example", "_dmarc.slow.example"}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSTestServer]:
    with DNSTestServer(ZONE, servfail=SERVFAIL, drop=DROP) as server:
        yield server


def auth_settings(tmp_path: Path, dns: DNSTestServer, dns_timeout: float = 0.5, **auth: Any) -> Settings:
    base = make_settings(tmp_path)
    return replace(base, auth=replace(base.auth, **auth),
                   dns=DNSSettings(nameservers=[dns.host], port=dns.port, timeout=dns_timeout))


async def start_auth_server(pool: asyncpg.Pool, settings: Settings, tls: Any = None) -> Server:
    sender_auth = SenderAuthentication(Resolver(settings.dns), settings.server.hostname, settings.auth,
                                       dns_timeout=settings.dns.timeout, org=ORG)
    return await start_server(pool, settings, tls, sender_auth=sender_auth)


@pytest.fixture
async def mx(pool: asyncpg.Pool, accounts_ids: dict[str, int], dns: DNSTestServer,
             tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await mx(**auth settings)` starts an MX with sender authentication; stopped after the test."""
    started: list[Server] = []

    async def start(dns_timeout: float = 0.5, **auth: Any) -> Server:
        server = await start_auth_server(pool, auth_settings(tmp_path, dns, dns_timeout, **auth))
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def message(from_addr: str, *, subject: str = "hello", body: bytes = b"Hello there.\r\n",
            extra: bytes = b"") -> bytes:
    head = (f"From: Sender <{from_addr}>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n")
    return extra + head.encode() + b"\r\n" + body


def signed(raw: bytes, domain: str, selector: str, pem: str, algorithm: str = "rsa-sha256") -> bytes:
    return sign_message(raw, domain, selector, pem, algorithm) + normalize_crlf(raw)


async def send(server: Server, mail_from: str, raw: bytes, rcpt: str = USER) -> tuple[int, str]:
    """Deliver over the MX; (code, enhanced code) of the reply to the end of data."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=15,
                             local_hostname=HELO)
    await client.connect()
    try:
        await client.sendmail(mail_from, [rcpt], raw)
        return 250, "2.0.0"
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message.split(" ")[0]
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            pass


def auth_results(stored: bytes) -> list[str]:
    """Every Authentication-Results value of a stored message, unfolded, in order."""
    msg = email.message_from_bytes(stored)
    return [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results") or []]


async def deliver_and_read(server: Server, mail_from: str, raw: bytes, mailbox: str = "INBOX") -> str:
    assert await send(server, mail_from, raw) == (250, "2.0.0")
    (stored,) = await inbox(server.pool, USER, mailbox)
    (ours,) = [v for v in auth_results(stored) if v.startswith(HOSTNAME + ";")]
    return ours


# --- SPF ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("domain", "result"), [
    ("spf-pass.example", "pass"),
    ("spf-fail.example", "fail"),
    ("spf-soft.example", "softfail"),
    ("spf-neutral.example", "neutral"),
    ("spf-none.example", "none"),
    ("spf-temp.example", "temperror"),
    ("spf-perm.example", "permerror"),
])
async def test_spf_result_recorded(mx, domain: str, result: str) -> None:
    server = await mx()
    header = await deliver_and_read(server, f"alice@{domain}", message(f"alice@{domain}"))
    assert f"spf={result} " in header and f"smtp.mailfrom=alice@{domain}" in header
    assert "spf=pass (" in header.split(f"smtp.mailfrom=alice@{domain};", 1)[1]  # the HELO check
    assert f"smtp.helo={HELO}" in header


async def test_null_sender_spf_is_the_helo_identity(mx) -> None:
    server = await mx()
    header = await deliver_and_read(server, "", message("mailer-daemon@spf-pass.example"))
    assert header.count("spf=") == 1 and "spf=pass" in header and f"smtp.helo={HELO}" in header


# --- DKIM --------------------------------------------------------------------------------------------

async def test_dkim_rsa_pass(mx) -> None:
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "s1", RSA_PEM)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert "dkim=pass header.d=signed.example header.i=@signed.example header.s=s1 header.a=rsa-sha256" in header


async def test_dkim_ed25519_pass(mx) -> None:
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "ed", ED_PEM, "ed25519-sha256")
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert "dkim=pass header.d=signed.example header.i=@signed.example header.s=ed header.a=ed25519-sha256" in header


async def test_dkim_body_modified_fails(mx) -> None:
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "s1", RSA_PEM)
    raw = raw.replace(b"Hello there.", b"Hello THERE.")
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert 'dkim=fail reason="body hash did not verify" header.d=signed.example' in header


async def test_dkim_missing_key(mx) -> None:
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "gone", RSA_PEM)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert "dkim=permerror" in header and "no key for signature at gone._domainkey.signed.example" in header


# --- DMARC -------------------------------------------------------------------------------------------

async def test_dmarc_reject_enforced_is_550(mx) -> None:
    server = await mx(enforce=True)
    assert await send(server, "x@reject.example", message("ceo@reject.example")) == code(replies.DMARC_REJECTED)
    assert await inbox(server.pool, USER) == []


async def test_dmarc_reject_not_enforced_is_delivered_with_the_failure_recorded(mx) -> None:
    server = await mx(enforce=False)
    header = await deliver_and_read(server, "x@reject.example", message("ceo@reject.example"))
    assert "spf=fail" in header and "dmarc=fail (p=reject dis=none) header.from=reject.example" in header


async def test_dmarc_reject_overridden_to_quarantine(mx) -> None:
    server = await mx(enforce=True, dmarc_reject="quarantine")
    header = await deliver_and_read(server, "x@reject.example", message("ceo@reject.example"), "Junk")
    assert "dmarc=fail (p=reject dis=quarantine)" in header


async def test_dmarc_reject_with_aligned_dkim_passes(mx) -> None:
    server = await mx(enforce=True)
    raw = signed(message("ceo@reject.example"), "reject.example", "s1", RSA_PEM)
    header = await deliver_and_read(server, "bounces@spf-pass.example", raw)
    assert "dkim=pass header.d=reject.example" in header and "dmarc=pass" in header


async def test_dmarc_quarantine_lands_in_junk(mx) -> None:
    server = await mx(enforce=True)
    header = await deliver_and_read(server, "x@quarantine.example", message("ceo@quarantine.example"), "Junk")
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.example" in header
    assert await inbox(server.pool, USER, "INBOX") == []


@pytest.mark.parametrize(("mail_from", "dmarc"), [
    ("news@none.example", "dmarc=pass (p=none)"),  # SPF pass, strictly aligned
    ("bounce@mail.none.example", "dmarc=pass (p=none)"),  # SPF pass, relaxed alignment (same org domain)
    ("bounce@spf-pass.example", "dmarc=fail (p=none dis=none)"),  # SPF pass for another domain: unaligned
])
async def test_dmarc_none_aligned_and_unaligned_go_to_inbox(mx, mail_from: str, dmarc: str) -> None:
    server = await mx(enforce=True)
    header = await deliver_and_read(server, mail_from, message("editor@none.example"))
    assert "spf=pass" in header and dmarc in header and "header.from=none.example" in header


async def test_internationalised_from_aligns_with_its_a_label_dkim_domain(mx) -> None:
    # RFC 6532 lets From name bücher.example; DKIM's d= is its A-label (RFC 8616 §4). Compared as they
    # were, they never aligned: DMARC failed and p=reject refused the domain's own signed mail.
    server = await mx(enforce=True)
    raw = message("ceo@bücher.example").decode("ascii", "ignore")
    raw = ("From: Sender <ceo@bücher.example>\r\n" + raw.split("\r\n", 1)[1]).encode()
    header = await deliver_and_read(server, "x@spf-fail.example", signed(raw, "xn--bcher-kva.example", "s1", RSA_PEM))
    assert "dkim=pass header.d=xn--bcher-kva.example" in header
    assert "dmarc=pass (p=reject) header.from=xn--bcher-kva.example" in header


# --- ARC ---------------------------------------------------------------------------------------------

def arc_suite_message(case: str) -> bytes:
    """A message from the ValiMail ARC suite (sealed by example.org, a reserved name), as CRLF."""
    return normalize_crlf(ARC_SUITE["tests"][case]["message"].encode())


async def test_arc_pass_recorded(mx) -> None:
    server = await mx()
    header = await deliver_and_read(server, "jqd@d1.example.org", arc_suite_message("cv_pass_i1_1"))
    assert header.endswith("arc=pass")


async def test_arc_broken_by_a_change_is_fail(mx) -> None:
    server = await mx()
    raw = arc_suite_message("cv_pass_i1_1").replace(b"This is a test", b"This is a changed")
    header = await deliver_and_read(server, "jqd@d1.example.org", raw)
    assert header.endswith("arc=fail")


# --- hostile input -------------------------------------------------------------------------------------

async def test_colon_laden_header_lines_are_read_as_unsigned(mx) -> None:
    # Each "X:a:a:a:a:a:a" line could end its field name at any colon; with a line no parser takes after
    # them, the old unsigned-message shortcut tried every combination on the loop thread (exponential).
    server = await mx()
    head = b"X:a:a:a:a:a:a\r\n" * 10 + b"not a header line\r\n"
    header = await deliver_and_read(server, "a@spf-pass.example", message("a@spf-pass.example", extra=head))
    assert "spf=pass" in header


async def test_hostile_dkim_tag_is_recorded_not_a_crash(mx) -> None:
    # dkimpy raised binascii.Error on bh= with bad padding: the whole check failed (451, a traceback)
    server = await mx()
    raw = re.sub(rb"bh=[^;]*;", b"bh=a===;", signed(message("a@signed.example"), "signed.example", "s1", RSA_PEM),
                 count=1)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert 'dkim=neutral reason="signature could not be processed" header.d=signed.example' in header


async def test_key_with_a_huge_exponent_is_refused(mx) -> None:
    # dkimpy verifies RSA with pow(), which holds the GIL: the worker thread stalled the loop for seconds.
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "s1", RSA_PEM).replace(b"s=s1;", b"s=fat;", 1)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert ('dkim=permerror reason="key at fat._domainkey.signed.example refused: RSA public exponent over 64 bits"'
            in header)


async def test_dmarc_record_with_a_long_run_of_spaces_is_read(mx) -> None:
    # The record parser's tag pattern was quadratic in a run of spaces: ~6 s on the loop for 30,000.
    server = await mx(enforce=True)
    header = await deliver_and_read(server, "x@spaces.example", message("ceo@spaces.example"), "Junk")
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=spaces.example" in header


def _copies_of_the_signature(raw: bytes) -> bytes:
    signature = raw[:raw.index(b"\r\nFrom: ") + 2]
    return signature * 200 + raw[len(signature):]


def _long_folded_domain(raw: bytes) -> bytes:
    return raw.replace(b"d=signed.example;", b"d=" + b"\r\n " .join([b"x" * 70] * 80) + b".signed.example;", 1)


@pytest.mark.parametrize("change", [_copies_of_the_signature, _long_folded_domain])
async def test_dmarc_and_arc_results_survive_many_or_long_dkim_results(mx, change: Callable[[bytes], bytes]) -> None:
    # 200 DKIM results (each one verified), or a d= folded over 80 lines, made the field longer than the
    # 4000 characters smtp_in keeps: DMARC's and ARC's results were cut off.
    server = await mx()
    raw = change(signed(message("a@none.example"), "signed.example", "s1", RSA_PEM))
    header = await deliver_and_read(server, "a@none.example", raw)
    assert header.endswith("dmarc=pass (p=none) header.from=none.example; arc=none")
    assert header.count("dkim=") <= 6
    # and the field is folded before each result: no line of it is over RFC 5322's 998 octets
    (stored,) = await inbox(server.pool, USER)
    field = stored[stored.index(b"Authentication-Results: " + HOSTNAME.encode()):]
    field = field[:field.index(b"\r\n", field.index(b"arc=none"))]
    assert field.count(b"\r\n\t") >= 5 and max(map(len, field.split(b"\r\n"))) <= 998


async def test_relaxed_body_of_space_runs_verifies(mx) -> None:
    # dkimpy's relaxed body pattern is quadratic in a run of spaces that does not end its line, in one
    # C call holding the GIL: this 1 MB body froze the loop for about 5 s per relaxed signature.
    server = await mx()
    raw = signed(message("a@signed.example", body=(b" " * 990 + b"x\r\n") * 1000), "signed.example", "s1", RSA_PEM)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert "dkim=pass header.d=signed.example" in header


async def test_b_tag_folded_over_space_lines_is_neutral(mx) -> None:
    # dkimpy's b= check retried every position of a run of white space: 18,000 folded spaces held the
    # GIL (and the loop) for seconds, before any key was fetched.
    server = await mx()
    raw = signed(message("a@signed.example"), "signed.example", "s1", RSA_PEM)
    spaces = b"\r\n".join([b""] + [b" " * 900] * 20)
    raw = re.sub(rb" b=[^;]*?\r\n(?=\S)", lambda m: b" b=A" + spaces + b"!\r\n", raw, count=1)
    header = await deliver_and_read(server, "a@signed.example", raw)
    assert 'dkim=neutral reason="b= folds with more than 64 white space characters in a row"' in header


async def test_hostile_arc_set_is_a_failed_chain_not_a_crash(mx) -> None:
    server = await mx()
    raw = re.sub(rb"bh=[^;]*;", b"bh=a===;", arc_suite_message("cv_pass_i1_1"), count=1)
    header = await deliver_and_read(server, "jqd@d1.example.org", raw)
    assert header.endswith("arc=fail")


# --- forged results ------------------------------------------------------------------------------------

async def test_forged_results_with_our_authserv_id_removed(mx) -> None:
    server = await mx()
    forged = (f"Authentication-Results: {HOSTNAME}; spf=pass smtp.mailfrom=ceo@reject.example;\r\n"
              f"\tdkim=pass header.d=reject.example; dmarc=pass\r\n"
              f"Authentication-Results: {HOSTNAME.upper()} (really); dmarc=pass\r\n"
              "Authentication-Results: other.example; spf=pass\r\n").encode()
    assert await send(server, "a@spf-fail.example", message("a@spf-fail.example", extra=forged)) == (250, "2.0.0")
    (stored,) = await inbox(server.pool, USER)
    values = auth_results(stored)
    assert values[-1] == "other.example; spf=pass"
    (ours,) = [v for v in values if v.lower().startswith(HOSTNAME)]
    assert "spf=fail" in ours and "dmarc=pass" not in ours
    # Ours sits right under our Received; nothing else of the message changed.
    assert stored.index(b"Authentication-Results: " + HOSTNAME.encode()) < stored.index(b"From: ")
    assert stored.endswith(b"Authentication-Results: other.example; spf=pass\r\n"
                           + message("a@spf-fail.example"))


async def test_forged_results_behind_deeply_nested_comments_are_removed(mx) -> None:
    # Finding the authserv-id removed innermost comments again and again: quadratic in the depth.
    server = await mx()
    nested = "(" * 15_000 + ")" * 15_000
    folded = "\r\n ".join(nested[i:i + 900] for i in range(0, len(nested), 900))
    forged = f"Authentication-Results: {folded} {HOSTNAME}; dmarc=pass header.from=reject.example\r\n".encode()
    assert await send(server, "a@spf-fail.example", message("a@spf-fail.example", extra=forged)) == (250, "2.0.0")
    (stored,) = await inbox(server.pool, USER)
    assert b"((((" not in stored and b"dmarc=pass" not in stored


async def test_submission_strips_forgeries_and_adds_no_verdict(pool: asyncpg.Pool, accounts_ids: dict[str, int],
                                                               dns: DNSTestServer, tmp_path: Path,
                                                               server_tls, client_tls) -> None:
    server = await start_auth_server(pool, auth_settings(tmp_path, dns), server_tls)
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("submission"), tls_context=client_tls,
                                 timeout=5, local_hostname="laptop.example")
        await client.connect()
        await client.login(USER, "correct horse battery")
        forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example\r\n".encode()
        raw = message(USER, extra=forged).replace(f"To: {USER}".encode(), f"To: {OTHER}".encode())
        errors, _ = await client.sendmail(USER, [OTHER], raw)
        await client.quit()
        assert errors == {}
        (stored,) = await inbox(pool, OTHER)
        assert auth_results(stored) == [] and b"bank.example" not in stored
    finally:
        await server.stop()


# --- DNS trouble ---------------------------------------------------------------------------------------

async def test_dns_timeout_on_the_policy_is_451_without_hanging(mx) -> None:
    server = await mx(enforce=True)
    async with asyncio.timeout(20):  # a hang guard: the lookups' own 0.5 s timeouts answer, as 451
        assert await send(server, "x@slow.example", message("ceo@slow.example")) == code(replies.CHECK_TEMPFAIL)
    assert await inbox(server.pool, USER) == []


async def test_servfail_on_an_aligned_identifier_under_p_reject_is_451(mx) -> None:
    server = await mx(enforce=True)
    raw = signed(message("ceo@reject.example"), "reject.example", "s1", RSA_PEM)
    raw = raw.replace(b"s=s1;", b"s=broken;")  # the key lookup gets SERVFAIL: it might have passed
    assert await send(server, "x@reject.example", raw) == code(replies.CHECK_TEMPFAIL)


async def test_whole_check_bounded_by_auth_timeout(mx) -> None:
    # The resolver would wait 60 s per lookup; auth.timeout cuts SPF and the end-of-data check at 1 s each.
    # Only that cut can answer before the 20 s hang guard fires.
    server = await mx(dns_timeout=60.0, enforce=True, timeout=1.0)
    async with asyncio.timeout(20):
        assert await send(server, "x@slow.example", message("ceo@slow.example")) == code(replies.CHECK_TEMPFAIL)


async def test_dns_timeout_not_enforced_delivers_with_temperror(mx) -> None:
    server = await mx(enforce=False)
    header = await deliver_and_read(server, "x@slow.example", message("ceo@slow.example"))
    assert "spf=temperror" in header and "dmarc=temperror header.from=slow.example" in header


async def test_connection_dropped_after_mail_leaves_no_task_behind(mx) -> None:
    server = await mx(dns_timeout=5.0)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=5,
                             local_hostname=HELO)
    await client.connect()
    await client.mail("x@slow.example")
    client.close()
    await asyncio.sleep(0.2)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "spf" and not t.done()]
