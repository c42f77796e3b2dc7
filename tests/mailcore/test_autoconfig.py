"""Client autoconfig documents against their documented formats (no HTTP: see tests/api/test_public.py)."""

from __future__ import annotations

import plistlib
from xml.etree import ElementTree as ET

import pytest

from mailcore.autoconfig import (
    AUTODISCOVER_REQUEST_NS,
    Endpoints,
    autodiscover,
    autodiscover_request_address,
    mobileconfig,
    thunderbird,
)

EP = Endpoints(hostname="mail.example.test", imaps=993, imap=143, submissions=465, submission=587)


def check_thunderbird(xml: bytes, domain: str, ep: Endpoints) -> None:
    """What Thunderbird's autoconfig reader expects (wiki.mozilla.org/Thunderbird:Autoconfiguration:
    ConfigFileFormat; comm-central's readFromXML.sys.mjs): clientConfig version 1.1, one emailProvider with
    an id and its domains, incomingServer/outgoingServer with hostname, port, socketType in
    {plain, SSL, STARTTLS}, username and an authentication method it knows."""
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    (provider,) = root.findall("emailProvider")
    assert provider.get("id") == domain
    assert [d.text for d in provider.findall("domain")] == [domain]
    assert provider.find("displayName") is not None
    children = [c.tag for c in provider]
    # Incoming servers come before outgoing ones, in order of preference.
    assert children.index("incomingServer") < children.index("outgoingServer")
    incoming = provider.findall("incomingServer")
    outgoing = provider.findall("outgoingServer")
    for server, typ in [(s, "imap") for s in incoming] + [(s, "smtp") for s in outgoing]:
        assert server.get("type") == typ
        assert server.findtext("hostname") == ep.hostname
        assert 1 <= int(server.findtext("port") or "0") <= 65535
        assert server.findtext("socketType") in ("SSL", "STARTTLS")
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"
    assert [(s.findtext("port"), s.findtext("socketType")) for s in incoming] == [
        (str(ep.imaps), "SSL"), (str(ep.imap), "STARTTLS")]
    assert [(s.findtext("port"), s.findtext("socketType")) for s in outgoing] == [
        (str(ep.submissions), "SSL"), (str(ep.submission), "STARTTLS")]


def test_thunderbird_document() -> None:
    check_thunderbird(thunderbird(EP, "example.test"), "example.test", EP)


def test_disabled_listeners_are_not_advertised() -> None:
    ep = Endpoints(hostname="mx.example.test", imaps=993, imap=None, submissions=None, submission=587)
    root = ET.fromstring(thunderbird(ep, "example.test"))
    assert [s.findtext("port") for s in root.iter("incomingServer")] == ["993"]
    assert [s.findtext("port") for s in root.iter("outgoingServer")] == ["587"]


def test_autodiscover_request_and_response() -> None:
    request = (f'<?xml version="1.0"?><Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request>'
               "<EMailAddress>alice@example.test</EMailAddress><AcceptableResponseSchema>"
               "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
               "</AcceptableResponseSchema></Request></Autodiscover>").encode()
    assert autodiscover_request_address(request) == "alice@example.test"
    root = ET.fromstring(autodiscover(EP, "alice@example.test"))
    ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protocols = root.findall("r:Response/r:Account/r:Protocol", ns)
    assert [(p.findtext("r:Type", namespaces=ns), p.findtext("r:Port", namespaces=ns),
             p.findtext("r:SSL", namespaces=ns)) for p in protocols] == [
        ("IMAP", "993", "on"), ("IMAP", "143", "off"), ("SMTP", "465", "on"), ("SMTP", "587", "off")]
    assert {p.findtext("r:LoginName", namespaces=ns) for p in protocols} == {"alice@example.test"}


@pytest.mark.parametrize("body", [
    b"not xml", b"<Autodiscover/>",
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Autodiscover><EMailAddress>&a;</EMailAddress></Autodiscover>',
    b"<a>" + b"x" * 70000 + b"</a>",
])
def test_bad_autodiscover_requests(body: bytes) -> None:
    assert autodiscover_request_address(body) is None


def test_mobileconfig_is_a_stable_profile() -> None:
    profile = plistlib.loads(mobileconfig(EP, "alice@example.test"))
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed" and mail["EmailAccountType"] == "EmailTypeIMAP"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == ("mail.example.test", 993, True)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (465, True)
    again = plistlib.loads(mobileconfig(EP, "alice@example.test"))
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # reinstalling replaces, not duplicates
