"""Which domain's DKIM key signs a queued message: the candidates, best first. No I/O, no signing.

The order is what mail administrators get from OpenDKIM behind Postfix (its SigningTable is looked up
with the address of the From header field, and `SubDomains` lets a domain's key sign its subdomains'
mail) and from OpenSMTPD's filter-dkimsign (the From domain, else its closest parent):

1. the RFC5322.From domain: DMARC aligns DKIM's d= with it, not with the envelope sender (RFC 7489
   §3.1), so a message whose From and MAIL FROM domains differ is signed where it counts; but only
   when the From domain is in the envelope sender's organisation (RFC 7489 §3.2): submission checks
   that the account may use its MAIL FROM, and nothing checks its From, so a From in another
   organisation (another tenant's hosted domain) gets the envelope's signature, not its own;
2. else the nearest parent of the From domain, up to its organisational domain (RFC 7489 §3.2): relaxed
   alignment, e.g. From bounces@mail.example.com signed d=example.com. Above the organisational domain
   nothing aligns, so the walk stops there;
3. else the envelope sender's domain (what signed before; Stalwart's default and maddy sign by it too);
4. else none: the message goes unsigned.

Only mail an account of ours submitted (over SMTP or the API: `submitted`) is signed at all, as OpenDKIM
behind Postfix and Stalwart sign only for authenticated or internal senders. Mail relayed from the MX (to
an alias that points elsewhere) is not: a stranger could otherwise give MAIL FROM and From one of our
domains, SPF failing or not, and have the message leave here with that domain's aligned signature, a
DMARC pass for a forgery. Our own DSNs are signed by their composers (`smtp_out.bounce`, and smtp_in's
over-quota notice) for `host_domains(server.hostname)`, their From being MAILER-DAEMON@hostname.

A missing From field, more than one, one with addresses in several domains, garbage or a non-ASCII one
never raises: the From steps are skipped (RFC 7489 §6.6.1 cannot name a From domain for such a message
either). A message without any From field has no candidates: it cannot be signed (RFC 6376 §5.4).
Domains come out as stored (`mailcore.address.normalize_domain`: lower case, A-labels).
"""

from __future__ import annotations

import functools

from mailcore.address import AddressError, normalize_domain
from mailcore.auth.dmarc import OrganizationalDomains, from_header_domain
from mailcore.headers import field_values

# At most this many names are tried from one From domain (itself and its parents): one that has more
# labels below its organisational domain is a made-up name, not a reason to look up dozens of keys.
MAX_FROM_CANDIDATES = 8


@functools.cache
def organizational_domains() -> OrganizationalDomains:
    """The Public Suffix List, read once per process (read-only after that) and shared."""
    return OrganizationalDomains()


def _domain(name: str) -> str | None:
    try:
        return normalize_domain(name)
    except (AddressError, UnicodeError, ValueError):
        return None


def host_domains(domain: str, org: OrganizationalDomains | None = None) -> list[str]:
    """`domain` and its parents up to its organisational domain, nearest first; [] for a name that is
    not a domain."""
    name = _domain(domain)
    if name is None:
        return []
    stop = (org or organizational_domains()).organizational(name)
    out = [name]
    while name.endswith("." + stop) and len(out) < MAX_FROM_CANDIDATES:
        name = name.split(".", 1)[1]
        out.append(name)
    return out


def author_domain(raw: bytes) -> str | None:
    """The RFC5322.From domain of `raw`, normalised, or None when the header names no single one."""
    try:
        domain, _reason = from_header_domain(field_values(raw, "from"))
    except (ValueError, UnicodeError, IndexError):  # a defence: the parsers are lenient and do not raise
        return None
    return _domain(domain) if domain else None


def candidates(raw: bytes, envelope_sender: str, *, submitted: bool,
               org: OrganizationalDomains | None = None) -> list[str]:
    """The domains whose newest key may sign `raw`, best first, without repeats (see the module
    docstring). `envelope_sender` is the queue's (empty for a null sender); `submitted`, whether an
    account of ours submitted the message: nothing else is signed."""
    if not submitted or not field_values(raw, "from"):
        return []
    _local, at, domain = envelope_sender.rpartition("@")
    envelope = _domain(domain) if at else None
    out: list[str] = []
    author = author_domain(raw)
    if author is not None and envelope is not None and _same_organization(author, envelope, org):
        out += host_domains(author, org)
    if envelope is not None:
        out.append(envelope)
    return list(dict.fromkeys(out))


def _same_organization(author: str, envelope: str, org: OrganizationalDomains | None) -> bool:
    """Whether the From domain belongs to the organisation of the envelope sender's, which submission has
    checked the account may use. A From in another organisation is the account's word only: signing
    for it would let a user of one hosted domain sign, DMARC-aligned, as another hosted domain."""
    domains = org or organizational_domains()
    return domains.organizational(author) == domains.organizational(envelope)


__all__ = ["MAX_FROM_CANDIDATES", "author_domain", "candidates", "host_domains", "organizational_domains"]
