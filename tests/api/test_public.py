"""Unauthenticated endpoints over real HTTP: autoconfig, autodiscover, mobileconfig, health, OpenAPI,
and /metrics moving as mail flows."""

from __future__ import annotations

import plistlib
import re

from mailcore.autoconfig import AUTODISCOVER_REQUEST_NS, Endpoints
from tests.api.conftest import ALICE, BOB, Api, ApiFactory
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
