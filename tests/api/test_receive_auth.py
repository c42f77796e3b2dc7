"""`POST /v1/receive` runs the MX's sender authentication: over real HTTP, with every DNS answer from the
loopback test DNS server through our real resolver. The SMTP client is the one the gateway names in
X-Client-IP / X-Client-Helo; without an address SPF is `none` and Authentication-Results says why."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Iterator
from typing import Any

import pytest

from mailcore.auth.dkim import generate_key, sign_message
from mailcore.lineends import normalize_crlf
from tests.api.conftest import BOB, Api, ApiFactory
from tests.dnsserver import DNSTestServer

HOSTNAME = "mail.example.test"  # the authserv-id (server.hostname of the API under test)
CLIENT = "192.0.2.10"
HELO = "client.remote.example"
RSA_PEM, RSA_TXT = generate_key("rsa", 2048)

ZONE: dict[str, dict[str, Any]] = {
    HELO: {"TXT": [f"v=spf1 ip4:{CLIENT} -all"]},
    "spf-pass.example": {"TXT": [f"v=spf1 ip4:{CLIENT} -all"]},
    "reject.example": {"TXT": ["v=spf1 -all"]},
    "_dmarc.reject.example": {"TXT": ["v=DMARC1; p=reject"]},
    "s1._domainkey.reject.example": {"TXT": [RSA_TXT]},
    "quarantine.example": {"TXT": ["v=spf1 -all"]},
    "_dmarc.quarantine.example": {"TXT": ["v=DMARC1; p=quarantine"]},
    "_dmarc.slow.example": {"TXT": ["v=DMARC1; p=reject"]},  # never answered: see DROP
}
DROP = {"slow.example", "_dmarc.slow.example"}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSTestServer]:
    with DNSTestServer(ZONE, drop=DROP) as server:
        yield server


def message(from_addr: str, subject: str = "hello", extra: bytes = b"") -> bytes:
    head = (f"From: Sender <{from_addr}>\r\nTo: {BOB}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject}@test>\r\n")
    return extra + head.encode() + b"\r\nHello there.\r\n"


async def receive(api: Api, mail_from: str, raw: bytes, **headers: str) -> Any:
    return await api.client.post(f"/v1/receive?to={BOB}&from={mail_from}", content=raw, headers={
        **api.auth(api.admin), "Content-Type": "message/rfc822", **headers})


async def stored(api: Api, mailbox: str = "INBOX") -> list[bytes]:
    rows = await api.pool.fetch(
        "SELECT mm.header_prefix || m.raw AS full FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " JOIN mailboxes b ON b.id = mm.mailbox_id JOIN accounts a ON a.id = b.account_id"
        " WHERE a.address = $1 AND b.name = $2 ORDER BY mm.uid", BOB, mailbox)
    return [bytes(r["full"]) for r in rows]


def results(raw: bytes) -> list[str]:
    """Every Authentication-Results value, unfolded."""
    return [" ".join(str(v).split()) for v in email.message_from_bytes(raw).get_all("Authentication-Results") or []]


async def test_spf_judged_on_the_client_the_gateway_names(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns)
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example"),
                      **{"X-Client-IP": CLIENT, "X-Client-Helo": HELO})
    assert r.status_code == 202, r.text
    (raw,) = await stored(api)
    (header,) = results(raw)
    assert header.startswith(HOSTNAME + ";")
    assert "spf=pass" in header and "smtp.mailfrom=x@spf-pass.example" in header
    assert f"smtp.helo={HELO}" in header  # the HELO identity's own check
    assert email.message_from_bytes(raw)["Received"].startswith(f"from {HELO} ([{CLIENT}])")


async def test_the_gateways_helo_is_read_as_the_mx_reads_one(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    """X-Client-Helo reached Received and Authentication-Results as given: parentheses and backslashes
    could close or escape the comments around it. It is cleaned as the MX cleans a HELO name."""
    api = await api_factory(dns=dns)
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example"),
                      **{"X-Client-IP": CLIENT, "X-Client-Helo": "client)(.remote\\.example"})
    assert r.status_code == 202, r.text
    (raw,) = await stored(api)
    (header,) = results(raw)
    assert f"smtp.helo={HELO}" in header
    assert email.message_from_bytes(raw)["Received"].startswith(f"from {HELO} ([{CLIENT}])")


async def test_without_a_client_address_spf_is_none_and_says_why(api_factory: ApiFactory,
                                                                  dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns)
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example"))
    assert r.status_code == 202, r.text
    (raw,) = await stored(api)
    (header,) = results(raw)
    assert "spf=none (client address unknown) smtp.mailfrom=x@spf-pass.example" in header


@pytest.mark.parametrize("value", ["not-an-ip", "192.0.2.300", "example.test", "fe80::1%eth0"])
async def test_invalid_client_ip_is_422(api: Api, value: str) -> None:
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example"), **{"X-Client-IP": value})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "X-Client-IP" in r.json()["detail"]
    assert await stored(api) == []


async def test_dmarc_reject_is_422_dmarc_rejected(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns, auth={"enforce": True})
    r = await receive(api, "x@reject.example", message("ceo@reject.example"), **{"X-Client-IP": CLIENT})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/dmarc-rejected") and "DMARC" in r.json()["detail"]
    assert await stored(api) == [] and await stored(api, "Junk") == []
    metrics = (await api.client.get("/metrics")).text
    assert 'mailserver_messages_rejected_total{reason="dmarc",via="api_receive"} 1.0' in metrics


async def test_dmarc_reject_passes_with_aligned_dkim(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns, auth={"enforce": True})
    raw = message("ceo@reject.example")
    raw = sign_message(raw, "reject.example", "s1", RSA_PEM, "rsa-sha256") + normalize_crlf(raw)
    r = await receive(api, "bounces@spf-pass.example", raw, **{"X-Client-IP": CLIENT})
    assert r.status_code == 202, r.text
    (header,) = results((await stored(api))[0])
    assert "dkim=pass header.d=reject.example" in header and "dmarc=pass" in header


async def test_dmarc_reject_not_enforced_is_delivered_and_recorded(api_factory: ApiFactory,
                                                                   dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns, auth={"enforce": False})
    r = await receive(api, "x@reject.example", message("ceo@reject.example"), **{"X-Client-IP": CLIENT})
    assert r.status_code == 202, r.text
    (header,) = results((await stored(api))[0])
    assert "spf=fail" in header and "dmarc=fail (p=reject dis=none) header.from=reject.example" in header


@pytest.mark.parametrize(("domain", "auth"), [
    ("quarantine.example", {}),
    ("reject.example", {"dmarc_reject": "quarantine"}),
])
async def test_dmarc_quarantine_lands_in_junk(api_factory: ApiFactory, dns: DNSTestServer, domain: str,
                                              auth: dict[str, Any]) -> None:
    api = await api_factory(dns=dns, auth={"enforce": True, **auth})
    r = await receive(api, f"x@{domain}", message(f"ceo@{domain}"), **{"X-Client-IP": CLIENT})
    assert r.status_code == 202, r.text
    assert await stored(api) == []
    (raw,) = await stored(api, "Junk")
    assert "dis=quarantine" in results(raw)[0]


async def test_dns_temperror_is_503_with_retry_after(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns, auth={"enforce": True})
    async with asyncio.timeout(20):  # a hang guard: the lookups' own timeouts answer, as 503
        r = await receive(api, "x@slow.example", message("ceo@slow.example"), **{"X-Client-IP": CLIENT})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    assert r.json()["type"].endswith("/temporarily-unavailable")
    assert await stored(api) == []


async def test_forged_results_with_our_authserv_id_are_removed(api_factory: ApiFactory,
                                                               dns: DNSTestServer) -> None:
    api = await api_factory(dns=dns)
    forged = (f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@spf-pass.example\r\n").encode()
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example", extra=forged),
                      **{"X-Client-IP": CLIENT})
    assert r.status_code == 202, r.text
    (raw,) = await stored(api)
    ours, theirs = results(raw)
    assert ours.startswith(HOSTNAME + ";") and "spf=pass" in ours and theirs.startswith("other.example;")
    assert b"bank.example" not in raw


async def test_a_header_block_over_one_megabyte_is_413(api_factory: ApiFactory, dns: DNSTestServer) -> None:
    """The MX's header cap holds on the API's receive path too (same delivery step)."""
    api = await api_factory(dns=dns)
    head = b"".join(b"X-Filler-%06d: value\r\n" % i for i in range(50_000))
    r = await receive(api, "x@spf-pass.example", message("x@spf-pass.example", extra=head))
    assert r.status_code == 413 and r.json()["type"].endswith("/too-large"), r.text
    assert await stored(api) == []
