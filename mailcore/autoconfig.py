"""Mail client self-configuration documents: Thunderbird autoconfig, Outlook autodiscover, Apple profiles.

Owns the three formats, built from `Endpoints` (our host name and the ports clients should use):
- Thunderbird `clientConfig` version 1.1 (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
  served at https://autoconfig.<domain>/mail/config-v1.1.xml and /.well-known/autoconfig/mail/config-v1.1.xml.
- Outlook "POX" autodiscover (MS-OXDSCLI): a response to a POSTed request naming the address.
- An Apple configuration profile (.mobileconfig, a property list with a com.apple.mail.managed payload).
Implicit TLS is listed before STARTTLS (RFC 8314 §3). Pure functions: no I/O, no HTTP, no database.
"""

from __future__ import annotations

import hashlib
import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from config.settings import ListenerSettings, Settings

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@dataclass(frozen=True)
class Endpoints:
    """Where clients connect; a port of None means that listener is off and is not advertised."""

    hostname: str
    imaps: int | None = 993
    imap: int | None = 143
    submissions: int | None = 465
    submission: int | None = 587


def _port(listener: ListenerSettings) -> int | None:
    return listener.port if listener.enabled and listener.port else None


def endpoints_from_settings(settings: Settings) -> Endpoints:
    """The endpoints the configured listeners offer."""
    return Endpoints(hostname=settings.server.hostname, imaps=_port(settings.imap.imaps),
                     imap=_port(settings.imap.imap), submissions=_port(settings.smtp.submissions),
                     submission=_port(settings.smtp.submission))


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def thunderbird(ep: Endpoints, domain: str) -> bytes:
    """The Thunderbird autoconfig document (clientConfig version 1.1) for addresses at `domain`."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"Mail at {domain}")
    _sub(provider, "displayShortName", domain)
    for kind, servers in (("incomingServer", [("imap", ep.imaps, "SSL"), ("imap", ep.imap, "STARTTLS")]),
                          ("outgoingServer", [("smtp", ep.submissions, "SSL"),
                                              ("smtp", ep.submission, "STARTTLS")])):
        for typ, port, socket_type in servers:
            if port is None:
                continue
            server = _sub(provider, kind, type=typ)
            _sub(server, "hostname", ep.hostname)
            _sub(server, "port", str(port))
            _sub(server, "socketType", socket_type)
            _sub(server, "username", "%EMAILADDRESS%")
            _sub(server, "authentication", "password-cleartext")
    return _xml(root)


def autodiscover_request_address(body: bytes) -> str | None:
    """The EMailAddress of an Outlook autodiscover request, or None if it has none or does not parse."""
    if len(body) > 64 * 1024 or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None  # no DTDs: nothing legitimate needs one, and entity expansion is an attack surface
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "EMailAddress" and el.text:
            return el.text.strip()
    return None


def autodiscover(ep: Endpoints, address: str) -> bytes:
    """The Outlook POX autodiscover response for `address`."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = _sub(root, "Response", xmlns=AUTODISCOVER_OUTLOOK_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for typ, port, ssl, encryption in (("IMAP", ep.imaps, "on", "SSL"), ("IMAP", ep.imap, "off", "TLS"),
                                       ("SMTP", ep.submissions, "on", "SSL"), ("SMTP", ep.submission, "off", "TLS")):
        if port is None:
            continue
        proto = _sub(account, "Protocol")
        _sub(proto, "Type", typ)
        _sub(proto, "Server", ep.hostname)
        _sub(proto, "Port", str(port))
        _sub(proto, "LoginName", address)
        _sub(proto, "DomainRequired", "off")
        _sub(proto, "SPA", "off")
        _sub(proto, "SSL", ssl)
        if encryption == "TLS":
            _sub(proto, "Encryption", "TLS")
        _sub(proto, "AuthRequired", "on")
        if typ == "SMTP":
            _sub(proto, "UsePOPAuth", "off")
            _sub(proto, "SMTPLast", "off")
    return _xml(root)


def mobileconfig(ep: Endpoints, address: str) -> bytes:
    """An (unsigned) Apple configuration profile setting up IMAP and submission for `address`."""
    domain = address.rpartition("@")[2]
    reverse = ".".join(reversed(ep.hostname.split(".")))
    # Stable identifiers: installing the profile again replaces it instead of adding a second account.
    ident = uuid.UUID(bytes=hashlib.sha256(f"{ep.hostname}/{address}".encode()).digest()[:16], version=4)
    incoming_port, incoming_ssl = (ep.imaps, True) if ep.imaps else (ep.imap, False)
    outgoing_port, outgoing_ssl = (ep.submissions, True) if ep.submissions else (ep.submission, False)
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.{address}",
        "PayloadUUID": str(ident).upper(),
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": ep.hostname,
        "IncomingMailServerPortNumber": incoming_port or 993,
        "IncomingMailServerUseSSL": incoming_ssl,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": ep.hostname,
        "OutgoingMailServerPortNumber": outgoing_port or 465,
        "OutgoingMailServerUseSSL": outgoing_ssl,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mailprofile.{address}",
        "PayloadUUID": str(uuid.UUID(bytes=hashlib.sha256(f"profile/{ident}".encode()).digest()[:16],
                                     version=4)).upper(),
        "PayloadDisplayName": f"Mail at {domain}",
        "PayloadDescription": f"Sets up the mail account {address}.",
        "PayloadOrganization": domain,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile)
