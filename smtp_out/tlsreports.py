"""TLS-RPT aggregate reports (RFC 8460): once per UTC day, for the day before, one report per policy domain
with counts in `tls_outcomes`, sent to the `rua` URIs of its `_smtp._tls` TXT record (RFC 8460 §3).

The job (`TLSReporter.run`) reads the counts (written by `smtp_out.tlsrpt`), asks the shared resolver for
each domain's record, builds the report JSON (§4) and gzips it (§5.1), then claims the (day, domain) in
`tls_reports` before sending anything: across instances and restarts each report goes out at most once. A
`mailto:` report (§5.3) is composed here, DKIM-signed by the host name's domain (the worker's DSN signer),
and committed to the outbound queue with the null reverse-path in the claim's own transaction, so it is
queued exactly once; an `https:` report (§5.4) is POSTed once, with the certificate verified, within
POST_TIMEOUT. Failures are logged and recorded in the claim's row, never retried. The same job prunes
counts and claims older than KEEP_DAYS. It owns no schedule: the queue service calls `due`/`run`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from email.utils import format_datetime, make_msgid
from urllib.parse import unquote, urlsplit

import asyncpg
import h11

from config.settings import Settings
from mailcore import mtasts
from mailcore.address import Address, AddressError, parse_address
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dsn import field_value
from mailcore.mime.precompute import summarize
from smtp_out import https
from smtp_out.retry import Clock
from storage import stspolicies, tlsoutcomes
from storage.delivery import commit_notice
from storage.tlsoutcomes import OutcomeKey

log = logging.getLogger(__name__)

KEEP_DAYS = 30           # days of counts (and claims) kept; older ones are deleted by the job
# The reports for a day are sent from this long after its end: every instance has written its counts by
# then (they flush every third of queue.lease_seconds).
REPORT_DELAY = dt.timedelta(hours=1)
POST_TIMEOUT = 60.0      # seconds for one https: report, connection to answer
MAX_RUA = 5              # report URIs used per domain (more is a misconfiguration or an amplifier)
MAX_FAILURE_DETAILS = 1000  # failure-details entries per policy (the most frequent first)

Sign = Callable[[bytes], bytes]


def parse_record(records: list[str]) -> list[str] | None:
    """The rua URIs of a domain's TLSRPT policy, or None when it has no valid one (RFC 8460 §3: records
    not starting with v=TLSRPTv1 are discarded; anything but exactly one left means no policy)."""
    found = [r for r in records if re.match(r"v\s*=\s*TLSRPTv1\s*(;|$)", r)]
    if len(found) != 1:
        return None
    for part in found[0].split(";")[1:]:
        key, sep, value = part.partition("=")
        if sep and key.strip() == "rua":
            uris = [u.strip() for u in value.split(",") if u.strip()]
            return uris or None
    return None


def build_report(*, day: dt.date, domain: str, counts: dict[OutcomeKey, tuple[int, str]], organization: str,
                 contact: str, report_id: str, sts_policy: mtasts.Policy | None,
                 sts_text: str | None) -> dict:
    """The aggregate report (RFC 8460 §4.4) of one policy domain for one UTC day."""
    policies = []
    for policy_type in sorted({k.policy_type for k in counts}):
        mine = {k: v for k, v in counts.items() if k.policy_type == policy_type}
        policy: dict = {"policy-type": policy_type}
        if policy_type == "sts" and sts_text is not None:
            policy["policy-string"] = [line for line in sts_text.splitlines() if line.strip()]
        policy["policy-domain"] = domain
        if policy_type == "sts" and sts_policy is not None:
            policy["mx-host"] = list(sts_policy.mx)
        failures = sorted(((k, v) for k, v in mine.items() if k.result_type != "success"),
                          key=lambda kv: (-kv[1][0], kv[0].result_type, kv[0].mx_host, kv[0].mx_address))
        entry: dict = {"policy": policy, "summary": {
            "total-successful-session-count": sum(n for k, (n, _) in mine.items() if k.result_type == "success"),
            "total-failure-session-count": sum(n for _, (n, _) in failures)}}
        if failures:
            entry["failure-details"] = [_failure(k, n, detail) for k, (n, detail) in failures[:MAX_FAILURE_DETAILS]]
        policies.append(entry)
    return {"organization-name": organization,
            "date-range": {"start-datetime": f"{day.isoformat()}T00:00:00Z",
                           "end-datetime": f"{day.isoformat()}T23:59:59Z"},
            "contact-info": contact, "report-id": report_id, "policies": policies}


def _failure(key: OutcomeKey, sessions: int, detail: str) -> dict:
    out: dict = {"result-type": key.result_type, "receiving-mx-hostname": key.mx_host,
                 "receiving-ip": key.mx_address, "failed-session-count": sessions}
    if detail:
        out["additional-information"] = detail
    return out


def file_name(submitter: str, domain: str, day: dt.date) -> str:
    """RFC 8460 §5.1: submitter!policy-domain!begin-timestamp!end-timestamp.json.gz (Unix seconds)."""
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    return f"{submitter}!{domain}!{start}!{start + 86400}.json.gz"


def compose(*, domain: str, submitter: str, report_id: str, to: str, sender: str, gz: bytes, name: str,
            now: dt.datetime) -> bytes:
    """The report as an email (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", a short text and
    the gzipped report as application/tlsrpt+gzip, with the Subject and TLS-Report-* fields it asks for."""
    boundary = f"=_tlsrpt_{uuid.uuid4().hex}"
    text = (f"This is an aggregate TLS report (RFC 8460) from {submitter} for the domain {domain}.\r\n"
            f"The report is the attached {name}.\r\n")
    attachment = base64.encodebytes(gz).replace(b"\n", b"\r\n").decode("ascii")
    head = [
        f"From: {sender}", f"To: {to}", f"Date: {format_datetime(now)}",
        f"Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>",
        f"Message-ID: {make_msgid(domain=submitter)}", "MIME-Version: 1.0",
        f"TLS-Report-Domain: {domain}", f"TLS-Report-Submitter: {submitter}",
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
    ]
    body = [
        f"--{boundary}", 'Content-Type: text/plain; charset="us-ascii"', "Content-Transfer-Encoding: 7bit", "",
        text, f"--{boundary}", f'Content-Type: application/tlsrpt+gzip; name="{name}"',
        "Content-Transfer-Encoding: base64", f'Content-Disposition: attachment; filename="{name}"', "",
        attachment, f"--{boundary}--", "",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body)).encode("ascii")


class TLSReporter:
    """The daily report job of one process (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, dns: DNSLookup | None, *, owner: str,
                 clock: Clock, signer: Callable[[], Awaitable[Sign | None]]) -> None:
        self.pool = pool
        self.settings = settings
        self.dns = dns
        self.owner = owner
        self.clock = clock
        self.signer = signer  # the worker's DSN signer: by the host name's domain (or a parent), or None
        self._done: dt.date | None = None  # the last day this process reported

    def due(self) -> bool:
        """Whether `run` has a day to report: on, and a day ended REPORT_DELAY ago not yet done here."""
        return (self.settings.queue.tls_reports and self.dns is not None
                and self._done != (self.clock() - REPORT_DELAY).date() - dt.timedelta(days=1))

    async def run(self) -> int:
        """Report the UTC day before the clock's day (less REPORT_DELAY) and prune; the reports sent."""
        if not self.settings.queue.tls_reports or self.dns is None:
            return 0
        day = (self.clock() - REPORT_DELAY).date() - dt.timedelta(days=1)
        sent = 0
        for domain in await tlsoutcomes.unreported(self.pool, day):
            try:
                sent += await self._report(day, domain)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("TLS report not sent", extra={"domain": domain, "error": repr(exc)})
        pruned = await tlsoutcomes.prune(self.pool, day - dt.timedelta(days=KEEP_DAYS))
        if pruned:
            log.info("TLS outcomes pruned", extra={"rows": pruned})
        self._done = day
        return sent

    async def _report(self, day: dt.date, domain: str) -> int:
        assert self.dns is not None
        try:
            uris = parse_record(await self.dns.txt(f"_smtp._tls.{domain}"))
        except DNSNotFound:
            uris = None
        except DNSTempError as exc:
            # Not retried: claimed with the failure, as any other (a report is statistics, not mail).
            log.warning("TLS report not sent: DNS failure", extra={"domain": domain, "error": str(exc)})
            await tlsoutcomes.claim_report(self.pool, day, domain, "", self.owner, "dns-failure")
            return 0
        if uris is None:
            await tlsoutcomes.claim_report(self.pool, day, domain, "", self.owner, "no-policy")
            return 0
        host = self.settings.server.hostname
        report_id = f"{day.isoformat()}.{uuid.uuid4().hex[:16]}@{host}"
        counts = await tlsoutcomes.for_domain(self.pool, day, domain)
        stored = await stspolicies.load(self.pool, domain, self.clock())
        try:
            sts = mtasts.parse_policy(stored.text) if stored is not None else None
        except ValueError:
            sts = None
        report = build_report(day=day, domain=domain, counts=counts, organization=host,
                              contact=self.settings.server.postmaster or f"postmaster@{host}",
                              report_id=report_id, sts_policy=sts, sts_text=stored.text if sts else None)
        gz = gzip.compress(json.dumps(report).encode(), mtime=0)
        name = file_name(host, domain, day)
        mailto = [u for u in uris[:MAX_RUA] if u.lower().startswith("mailto:")]
        https = [u for u in uris[:MAX_RUA] if u.lower().startswith("https:")]
        messages = [m for m in [await self._message(u, domain, report_id, gz, name) for u in mailto] if m]
        async with self.pool.acquire() as conn, conn.transaction():
            if not await tlsoutcomes.claim_report(conn, day, domain, report_id, self.owner):
                return 0  # another instance has it
            for to, raw in messages:
                await commit_notice(conn, to, raw, summarize(raw), self.settings.server.postmaster)
        failures = [f"{uri}: {error}" for uri in https if (error := await self._post(uri, gz)) is not None]
        outcome = "sent" if (messages or len(failures) < len(https)) else "failed"
        await tlsoutcomes.report_done(self.pool, day, domain, outcome if not failures else
                                      f"{outcome}; " + "; ".join(failures)[:900])
        log.info("TLS report", extra={"domain": domain, "report_id": report_id, "outcome": outcome,
                                      "mailto": len(messages), "https": len(https) - len(failures)})
        return 1 if outcome == "sent" else 0

    async def _message(self, uri: str, domain: str, report_id: str, gz: bytes,
                       name: str) -> tuple[Address, bytes] | None:
        """(address, signed message) for one mailto: URI, or None (logged) when it names no usable address."""
        try:
            to = parse_address(unquote(uri[len("mailto:"):].split("?", 1)[0]))
        except AddressError:
            log.warning("TLS report: unusable rua", extra={"domain": domain, "rua": field_value(uri)})
            return None
        if not str(to).isascii():  # the report is composed in ASCII; a UTF-8 address needs SMTPUTF8 mail
            log.warning("TLS report: rua address not ASCII, skipped", extra={"domain": domain,
                                                                              "rua": field_value(uri)})
            return None
        host = self.settings.server.hostname
        raw = compose(domain=domain, submitter=host, report_id=report_id, to=str(to), sender=f"noreply@{host}",
                      gz=gz, name=name, now=self.clock())
        sign = await self.signer()
        if sign is not None:
            try:
                raw = await asyncio.to_thread(sign, raw) + raw
            except Exception:  # a broken key must not stop the report: unsigned, loudly (as DSNs)
                log.exception("DKIM signing of a TLS report failed; sending it unsigned")
        return to, raw

    async def _post(self, uri: str, gz: bytes) -> str | None:
        """POST the gzipped report (RFC 8460 §5.4); None on a 2xx answer, else what went wrong."""
        parts = urlsplit(uri)
        host = parts.hostname
        if not host:
            return "no host"
        assert self.dns is not None
        try:
            port = parts.port or 443
            async with asyncio.timeout(POST_TIMEOUT):
                answer = await https.request(
                    self.dns, host, port, "POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                    ca_file=self.settings.queue.tls_ca_file, user_agent="mailserver TLS-RPT", body_limit=None,
                    headers=[("Content-Type", "application/tlsrpt+gzip")], body=gz, authority=parts.netloc)
        except TimeoutError:
            return "timed out"
        except (OSError, ValueError, DNSNotFound, DNSTempError, h11.ProtocolError, https.HTTPSError) as exc:
            return f"{type(exc).__name__}: {field_value(str(exc))}"
        return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
