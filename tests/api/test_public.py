"""Unauthenticated endpoints over real HTTP: autoconfig, autodiscover, mobileconfig, health, OpenAPI,
and /metrics moving as mail flows."""

from __future__ import annotations

import plistlib
import re
from pathlib import Path

import trustme

from config.settings import DNSSettings
from mailcore.autoconfig import AUTODISCOVER_REQUEST_NS, Endpoints
from mailcore.dns.resolver import Resolver
from mailcore.mtasts import PUBLISHED_MAX_AGE, Policy, parse_policy
from mailcore.tls import server_context
from mailserver.dnsrecords import domain_records
from smtp_out.mtasts import PolicySource
from tests.api.conftest import ALICE, BOB, Api, ApiFactory, make_settings, start_api
from tests.dnsserver import DNSTestServer
from tests.mailcore.test_autoconfig import check_thunderbird


async def test_thunderbird_autoconfig_over_http(api_factory: ApiFactory) -> None:
    from config.settings import ListenerSettings

    api = await api_factory(submission=ListenerSettings(True, "0.0.0.0", 2587),
                            submissions=ListenerSettings(True, "0.0.0.0", 2465))
    ep = Endpoints("mail.example.test", imaps=993, imap=143, submissions=2465, submission=2587)
    r = await api.client.get("/.well-known/autoconfig/mail/config-v1.1.xml",
                             params={"emailaddress": ALICE})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    check_thunderbird(r.content, "example.test", ep)
    # The autoconfig.<domain> form: the domain comes from the Host header.
    r = await api.client.get("/mail/config-v1.1.xml", headers={"Host": "autoconfig.example.test"})
    assert r.status_code == 200
    check_thunderbird(r.content, "example.test", ep)
    for params, host in (({"emailaddress": "x@other.example"}, None), ({}, "autoconfig.other.example")):
        r = await api.client.get("/mail/config-v1.1.xml", params=params,
                                 headers={"Host": host} if host else {})
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await api.client.get("/.well-known/autoconfig/mail/config-v1.1.xml", params={"emailaddress": "bad"})
    assert r.status_code == 422


async def test_autodiscover_and_mobileconfig_over_http(api: Api) -> None:
    body = (f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request><EMailAddress>{ALICE}</EMailAddress>'
            "</Request></Autodiscover>").encode()
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        r = await api.client.post(path, content=body, headers={"Content-Type": "text/xml"})
        assert r.status_code == 200 and b"<LoginName>alice@example.test</LoginName>" in r.content
    r = await api.client.post("/autodiscover/autodiscover.xml", content=b"<nope/>")
    assert r.status_code == 422
    r = await api.client.post("/autodiscover/autodiscover.xml", content=body.replace(b"example.test", b"x.example"))
    assert r.status_code == 404
    r = await api.client.get("/mobileconfig", params={"emailaddress": ALICE})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-apple-aspen-config"
    assert plistlib.loads(r.content)["PayloadContent"][0]["EmailAddress"] == ALICE
    assert (await api.client.get("/mobileconfig")).status_code == 422


async def test_healthz_openapi_and_docs(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}
    spec = (await api.client.get("/openapi.json")).json()
    for path in ("/v1/send", "/v1/inbox", "/v1/sent", "/v1/mailboxes/{name}/messages", "/v1/messages/{message_id}",
                 "/v1/messages/{message_id}/raw", "/v1/messages/{message_id}/attachments/{index}",
                 "/v1/messages/{message_id}/status", "/v1/receive", "/.well-known/autoconfig/mail/config-v1.1.xml",
                 "/autodiscover/autodiscover.xml", "/mobileconfig", "/healthz"):
        assert path in spec["paths"], path
    send_body = spec["paths"]["/v1/send"]["post"]["requestBody"]["content"]
    assert set(send_body) == {"application/json", "message/rfc822"}
    assert "from" in spec["components"]["schemas"]["SendRequest"]["properties"]
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (await api.client.get("/no/such/path")).headers["content-type"] == "application/problem+json"


async def test_healthz_is_503_when_the_database_is_gone(api: Api) -> None:
    await api.pool.close()
    r = await api.client.get("/healthz")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in r.text and "asyncpg" not in r.text


def _value(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_metrics_move_as_mail_flows(api: Api) -> None:
    before = (await api.client.get("/metrics")).text
    assert _value(before, "mailserver_queue_depth") == 0
    await api.client.post("/v1/send", headers=api.auth(api.alice),
                          json={"from": ALICE, "to": [BOB, "x@far.example"], "text": "hi"})
    await api.client.post("/v1/send", headers=api.auth(api.alice),
                          json={"from": BOB, "to": [ALICE], "text": "spoof"})
    r = await api.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert _value(after, "mailserver_messages_received_total", '{via="api_send"}') == 1
    assert _value(after, "mailserver_messages_rejected_total", '{reason="sender_not_owned",via="api_send"}') == 1
    assert _value(after, "mailserver_deliveries_total", '{outcome="local"}') == 1
    assert _value(after, "mailserver_queue_depth") == 1
    assert _value(after, "mailserver_queue_oldest_age_seconds") >= 0
    count = _value(after, "mailserver_http_request_duration_seconds_count",
                   '{method="POST",route="/v1/send",status="2xx"}')
    assert count == 1
    assert _value(after, "mailserver_http_request_duration_seconds_count",
                  '{method="POST",route="/v1/send",status="4xx"}') == 1


async def test_our_mta_sts_policy_is_served_for_hosted_domains(api: Api) -> None:
    r = await api.client.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.test"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert parse_policy(r.text) == Policy("testing", ("mail.example.test",), PUBLISHED_MAX_AGE)
    for host in ("mta-sts.other.example", "example.test", "autoconfig.example.test"):
        r = await api.client.get("/.well-known/mta-sts.txt", headers={"Host": host})
        assert r.status_code == 404


async def test_our_policy_as_a_sender_reads_it(db_dsn: str, tmp_path: Path) -> None:
    """The records `mailserver dns` prints and the policy the API serves over HTTPS, read by our own
    outbound side (smtp_out.mtasts) as any sender would: through DNS, with the certificate checked."""
    ca = trustme.CA()
    ca.issue_cert("mta-sts.example.test").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = server_context(tmp_path / "server.pem", tmp_path / "server.pem")
    settings = make_settings(db_dsn, http={"tls": True, "allow_plaintext_basic": False},
                             server={"mta_sts_mode": "enforce"})
    runtime, service = await start_api(db_dsn, settings, tls=tls)
    try:
        lines = domain_records("example.test", "mail.example.test", [], mta_sts_mode="enforce")
        record = next(line for line in lines if line.startswith("_mta-sts.example.test."))
        txt = record.split("\tTXT\t", 1)[1].strip('"')
        zone = {"_mta-sts.example.test": {"TXT": [txt]}, "mta-sts.example.test": {"A": ["127.0.0.1"]}}
        assert "mta-sts.example.test.\t3600\tIN\tCNAME\tmail.example.test." in lines
        with DNSTestServer(zone) as dns:
            resolver = Resolver(DNSSettings(nameservers=[dns.host], port=dns.port, timeout=1.0))
            source = PolicySource(resolver, port=service.port, ca_file=str(tmp_path / "ca.pem"))
            policy = await source.policy("example.test")
        assert policy == Policy("enforce", ("mail.example.test",), PUBLISHED_MAX_AGE)
        assert policy.allows("mail.example.test") and not policy.allows("mx.example.test")
    finally:
        await service.stop(1.0)
        await runtime.close()
