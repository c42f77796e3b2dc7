"""TLS-RPT aggregate reports (RFC 8460) sent from the counts in `tls_outcomes`: the policy from the
loopback DNS server's `_smtp._tls` TXT, a mailto: report queued and delivered to a loopback sink found by
MX, an https: report POSTed to a loopback HTTPS server with a certificate from a trusted test CA. The job
is driven directly with the test clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import gzip
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import dkim
import pytest
import trustme

from config.settings import DNSSettings
from mailcore.auth.dkim import generate_key, sign_message
from mailcore.dns.resolver import Resolver
from smtp_out.tlsreports import REPORT_DELAY, parse_record
from storage import dkim_keys, tlsoutcomes
from storage.tlsoutcomes import OutcomeKey
from tests.dnsserver import DNSTestServer
from tests.smtp_out import test_mtasts
from tests.smtp_out.conftest import HOSTNAME, Clock, outbound
from tests.smtp_out.test_mtasts import PolicyServer

ca = test_mtasts.ca  # the test CA and its PEM file, as the MTA-STS tests make them
ca_file = test_mtasts.ca_file


@dataclass
class ReportServer(PolicyServer):
    """An HTTPS server that keeps each request as (head, body) and answers with `status`."""

    reports: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            self.reports.append((head, await reader.readexactly(length)))
            writer.write(f"HTTP/1.1 {self.status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, StopIteration):
            pass
        finally:
            writer.close()


@pytest.fixture
async def web(ca: trustme.CA) -> AsyncIterator[ReportServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("reports.web.test").configure_cert(ctx)
    server = await ReportServer(ctx).start()
    yield server
    await server.stop()


def _world(web_port: int, txt: str = "") -> DNSTestServer:
    return DNSTestServer({
        "_smtp._tls.far.test": {"TXT": ["v=TLSRPTv1; rua=mailto:tls-reports@rpt.test"]},
        "_smtp._tls.ok.test": {"TXT": ["v=TLSRPTv1;rua=mailto:tls-reports@rpt.test", "v=spf1 -all"]},
        "_smtp._tls.web.test": {"TXT": [f"v=TLSRPTv1; rua=https://reports.web.test:{web_port}/tlsrpt"]},
        "_smtp._tls.two.test": {"TXT": ["v=TLSRPTv1; rua=mailto:a@rpt.test", "v=TLSRPTv1; rua=mailto:b@rpt.test"]},
        "_smtp._tls.utf8.test": {"TXT": ["v=TLSRPTv1; rua=mailto:r%C3%A9sum%C3%A9@rpt.test,mailto:tls@rpt.test"]},
        "rpt.test": {"MX": [(10, "mx.rpt.test.")]},
        "mx.rpt.test": {"A": ["127.0.0.1"]},
        "reports.web.test": {"A": ["127.0.0.1"]},
    }).start()


def _noon(clock: Clock) -> dt.date:
    """Move the clock forward to the next 12:00 UTC (well past the reports' delay); yesterday's date."""
    now = clock()
    noon = dt.datetime.combine(now.date(), dt.time(12), dt.UTC)
    if noon < now:
        noon += dt.timedelta(days=1)
    clock.advance((noon - now).total_seconds())
    return noon.date() - dt.timedelta(days=1)


def _resolver(server: DNSTestServer) -> Resolver:
    return Resolver(DNSSettings(nameservers=[server.host], port=server.port, timeout=1.0, cache_size=0))


async def _counts(pool: asyncpg.Pool, day: dt.date, domain: str,
                  rows: list[tuple[str, str, str, str, int, str]]) -> None:
    """(policy type, result type, mx host, mx address, sessions, detail) rows for `domain` on `day`."""
    await tlsoutcomes.add(pool, {OutcomeKey(day, domain, pt, rt, host, addr): (n, detail)
                                 for pt, rt, host, addr, n, detail in rows})


async def _report_and_deliver(pool: asyncpg.Pool, clock: Clock, mx_port: int, web: ReportServer,
                              reports: int) -> None:
    """Run the day's report job against `_world`, then one queue pass: `reports` sent, and delivered."""
    dns = _world(web.port)
    try:
        ob = outbound(pool, clock, _resolver(dns), mx_port=mx_port, tls_reports=True, mta_sts=False)
        assert await ob.tls_reports.run() == reports
        assert await ob.run_once() == reports
    finally:
        dns.stop()


def _report(data: bytes) -> tuple[email.message.EmailMessage, dict]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    parts = list(msg.iter_parts())
    attachment = parts[-1]
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    return msg, json.loads(gzip.decompress(attachment.get_content()))


async def test_mailto_report_is_queued_signed_and_delivered_once(pool: asyncpg.Pool, ours: int, sinks,
                                                                 clock: Clock, web: ReportServer) -> None:
    pem, txt = generate_key("rsa", 2048)
    await dkim_keys.add_key(pool, "ours.example", "s1", pem, "rsa-sha256")
    sink = await sinks()
    yesterday = _noon(clock)
    await _counts(pool, yesterday, "far.test", [
        ("sts", "success", "mx.far.test", "192.0.2.1", 7, ""),
        ("sts", "certificate-expired", "mx.far.test", "192.0.2.2", 2, "certificate has expired"),
        ("no-policy-found", "starttls-not-supported", "mx2.far.test", "192.0.2.3", 1, "no STARTTLS"),
    ])
    await _counts(pool, yesterday - dt.timedelta(days=40), "far.test",
                  [("sts", "success", "mx.far.test", "192.0.2.1", 1, "")])
    dns = _world(web.port)
    try:
        ob = outbound(pool, clock, _resolver(dns), signer=sign_message, mx_port=sink.port, tls_reports=True,
                      mta_sts=False)
        assert await ob.tls_reports.run() == 1
        assert await ob.tls_reports.run() == 0  # the same day again: nothing more
        again = outbound(pool, clock, _resolver(dns), signer=sign_message, mx_port=sink.port, tls_reports=True,
                         mta_sts=False)
        assert await again.tls_reports.run() == 0  # another instance (or a restart): nothing more
        assert await ob.run_once() == 1
    finally:
        dns.stop()
    (got,) = sink.received
    assert got.mail_from in ("", "<>") and got.rcpt_tos == ["tls-reports@rpt.test"]
    msg, report = _report(got.data)
    rid = report["report-id"]
    assert msg["Subject"] == f"Report Domain: far.test Submitter: {HOSTNAME} Report-ID: <{rid}>"
    assert msg["TLS-Report-Domain"] == "far.test" and msg["TLS-Report-Submitter"] == HOSTNAME
    assert msg["From"] == f"noreply@{HOSTNAME}"
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "tlsrpt"
    start = int(dt.datetime.combine(yesterday, dt.time(), dt.UTC).timestamp())
    assert list(msg.iter_parts())[-1].get_filename() == f"{HOSTNAME}!far.test!{start}!{start + 86400}.json.gz"
    assert report["organization-name"] == HOSTNAME and report["contact-info"] == f"postmaster@{HOSTNAME}"
    assert report["date-range"] == {"start-datetime": f"{yesterday}T00:00:00Z",
                                    "end-datetime": f"{yesterday}T23:59:59Z"}
    by_type = {p["policy"]["policy-type"]: p for p in report["policies"]}
    assert set(by_type) == {"sts", "no-policy-found"}
    sts = by_type["sts"]
    assert sts["policy"]["policy-domain"] == "far.test"
    assert sts["summary"] == {"total-successful-session-count": 7, "total-failure-session-count": 2}
    assert sts["failure-details"] == [{
        "result-type": "certificate-expired", "receiving-mx-hostname": "mx.far.test",
        "receiving-ip": "192.0.2.2", "failed-session-count": 2,
        "additional-information": "certificate has expired"}]
    assert by_type["no-policy-found"]["summary"] == {"total-successful-session-count": 0,
                                                     "total-failure-session-count": 1}
    assert got.data.startswith(b"DKIM-Signature:")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.ours.example."
        return txt.encode()

    assert await asyncio.to_thread(dkim.verify, got.data, dnsfunc=dnsfunc)
    # the old day's counts are pruned by the same job
    assert await tlsoutcomes.for_day(pool, yesterday - dt.timedelta(days=40)) == {}


async def test_https_report_is_posted(pool: asyncpg.Pool, ours: int, clock: Clock, web: ReportServer,
                                      ca_file: str) -> None:
    yesterday = _noon(clock)
    await _counts(pool, yesterday, "web.test", [
        ("no-policy-found", "success", "mx.web.test", "192.0.2.9", 3, ""),
        ("no-policy-found", "validation-failure", "mx.web.test", "192.0.2.9", 1, "handshake failed")])
    dns = _world(web.port)
    try:
        ob = outbound(pool, clock, _resolver(dns), tls_reports=True, tls_ca_file=ca_file, mta_sts=False)
        assert await ob.tls_reports.run() == 1
        assert await ob.tls_reports.run() == 0
    finally:
        dns.stop()
    ((head, body),) = web.reports
    assert head.startswith(b"POST /tlsrpt HTTP/1.1\r\n")
    assert b"content-type: application/tlsrpt+gzip" in head.lower()
    report = json.loads(gzip.decompress(body))
    (policy,) = report["policies"]
    assert policy["policy"] == {"policy-type": "no-policy-found", "policy-domain": "web.test"}
    assert policy["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 1}
    assert await pool.fetchval("SELECT outcome FROM tls_reports WHERE policy_domain = 'web.test'") == "sent"


@pytest.mark.parametrize("domain", ["none.test", "two.test"], ids=["no-record", "two-records"])
async def test_no_valid_record_sends_nothing(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                             web: ReportServer, domain: str) -> None:
    sink = await sinks()
    yesterday = _noon(clock)
    await _counts(pool, yesterday, domain, [("no-policy-found", "success", "mx", "192.0.2.1", 1, "")])
    dns = _world(web.port)
    try:
        ob = outbound(pool, clock, _resolver(dns), mx_port=sink.port, tls_reports=True)
        assert await ob.tls_reports.run() == 0
        assert await ob.run_once() == 0
    finally:
        dns.stop()
    assert sink.received == [] and web.reports == []


async def test_a_day_of_only_successes_is_reported(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                   web: ReportServer) -> None:
    sink = await sinks()
    yesterday = _noon(clock)
    await _counts(pool, yesterday, "ok.test", [("no-policy-found", "success", "mx.ok.test", "192.0.2.1", 5, "")])
    await _counts(pool, yesterday + dt.timedelta(days=1), "ok.test", [("no-policy-found", "success", "mx.ok.test", "192.0.2.1", 9, "")])
    await _report_and_deliver(pool, clock, sink.port, web, 1)
    (got,) = sink.received
    _msg, report = _report(got.data)
    (policy,) = report["policies"]
    assert policy["summary"] == {"total-successful-session-count": 5, "total-failure-session-count": 0}
    assert "failure-details" not in policy or policy["failure-details"] == []


async def test_a_utf8_rua_address_is_skipped_not_fatal(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                                       web: ReportServer) -> None:
    """A report is composed in ASCII (it is our message); a rua address with a UTF-8 local part would
    need SMTPUTF8 and stopped the whole day's job (UnicodeEncodeError) for every domain after it. Now
    that address is skipped and logged, the domain's other rua and the other domains get their reports."""
    sink = await sinks()
    yesterday = _noon(clock)
    for domain in ("utf8.test", "ok.test"):
        await _counts(pool, yesterday, domain, [("no-policy-found", "success", f"mx.{domain}", "192.0.2.1", 2, "")])
    await _report_and_deliver(pool, clock, sink.port, web, 2)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["tls-reports@rpt.test", "tls@rpt.test"]


async def test_turned_off_sends_nothing(pool: asyncpg.Pool, ours: int, clock: Clock, web: ReportServer) -> None:
    yesterday = _noon(clock)
    await _counts(pool, yesterday, "web.test", [("no-policy-found", "success", "mx", "192.0.2.1", 1, "")])
    dns = _world(web.port)
    try:
        assert await outbound(pool, clock, _resolver(dns)).tls_reports.run() == 0
    finally:
        dns.stop()
    assert web.reports == []


@pytest.mark.parametrize(("records", "expected"), [
    (["v=TLSRPTv1; rua=mailto:a@example.test"], ["mailto:a@example.test"]),
    (["v=TLSRPTv1;rua=mailto:a@example.test,https://r.example.test/x"],
     ["mailto:a@example.test", "https://r.example.test/x"]),
    (["v=TLSRPTv1 ; rua = mailto:a@example.test ; ext=1"], ["mailto:a@example.test"]),
    (["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.test"], ["mailto:a@example.test"]),
    (["v=TLSRPTv1; rua=mailto:a@example.test", "v=TLSRPTv1; rua=mailto:b@example.test"], None),
    (["v=TLSRPTv2; rua=mailto:a@example.test"], None),
    (["v=TLSRPTv1"], None),
    (["rua=mailto:a@example.test; v=TLSRPTv1"], None),
    ([], None),
], ids=["plain", "two-uris", "spaces-and-extension", "other-records", "two-records", "other-version",
        "no-rua", "version-not-first", "none"])
def test_record_grammar(records: list[str], expected: list[str] | None) -> None:
    """RFC 8460 §3: records not starting with v=TLSRPTv1 are discarded; exactly one must remain."""
    assert parse_record(records) == expected


async def test_a_refused_https_report_is_recorded_not_retried(pool: asyncpg.Pool, ours: int, clock: Clock,
                                                             web: ReportServer, ca_file: str) -> None:
    web.status = "503 Service Unavailable"
    yesterday = _noon(clock)
    await _counts(pool, yesterday, "web.test", [("no-policy-found", "success", "mx", "192.0.2.1", 1, "")])
    dns = _world(web.port)
    try:
        ob = outbound(pool, clock, _resolver(dns), tls_reports=True, tls_ca_file=ca_file)
        assert await ob.tls_reports.run() == 0
        assert await ob.tls_reports.run() == 0
    finally:
        dns.stop()
    assert len(web.reports) == 1
    outcome = await pool.fetchval("SELECT outcome FROM tls_reports WHERE policy_domain = 'web.test'")
    assert outcome.startswith("failed;") and "HTTP 503" in outcome


async def test_due_once_a_day_after_the_delay(pool: asyncpg.Pool, clock: Clock) -> None:
    """The heartbeat's question: a day is due from REPORT_DELAY after its end, once per process."""
    _noon(clock)
    ob = outbound(pool, clock, _resolver_for_nothing(), tls_reports=True)
    assert ob.tls_reports.due()
    await ob.tls_reports.run()
    assert not ob.tls_reports.due()
    clock.advance(12 * 3600 + REPORT_DELAY.total_seconds() - 60)  # 00:59 the next day: not yet
    assert not ob.tls_reports.due()
    clock.advance(120)
    assert ob.tls_reports.due()
    assert not outbound(pool, clock, _resolver_for_nothing()).tls_reports.due()  # off


def _resolver_for_nothing() -> Resolver:
    return Resolver(DNSSettings(nameservers=["127.0.0.1"], port=9, timeout=0.2, cache_size=0))
