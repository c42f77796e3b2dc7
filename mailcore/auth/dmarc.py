"""DMARC (RFC 7489): does the visible From domain authorise this message, and what does it ask us to do?

This module owns policy discovery (`_dmarc.<From domain>`, then `_dmarc.<organisational domain>`; the
organisational domain from the Public Suffix List), the record parser, identifier alignment and the
evaluation to an applied policy (p/sp, pct sampling with an injectable random source).

It must not look up SPF or DKIM itself (it takes their results), must not send reports, and must not
decide what the applied policy does to the message (`mailcore.auth.check` does, under the operator's
`AuthPolicySettings`). The Public Suffix List is loaded by the caller once (`OrganizationalDomains`)
and passed in: loading it costs tens of milliseconds.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from types import MappingProxyType

from publicsuffixlist import PublicSuffixList

from mailcore.auth.dkim import DKIMResult
from mailcore.auth.spf import SPFResult
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError, ascii_name

POLICIES = ("none", "quarantine", "reject")
# RFC 7489 §6.6.4: a message not sampled by pct gets the next less severe policy.
_WEAKER = MappingProxyType({"reject": "quarantine", "quarantine": "none", "none": "none"})


class DMARCSyntaxError(ValueError):
    """A TXT record that starts like DMARC but cannot be used."""


class OrganizationalDomains:
    """The organisational domain of a name (RFC 7489 §3.2), from a Public Suffix List snapshot.

    Build once and share: it holds only the list, read-only."""

    def __init__(self, psl: PublicSuffixList | None = None) -> None:
        self._psl = psl or PublicSuffixList()

    def registrable(self, domain: str | None) -> str | None:
        """The public suffix plus one label; None for a public suffix itself or a malformed name."""
        if not domain or domain.startswith(".") or ".." in domain:
            return None
        name = domain.rstrip(".").lower()
        try:
            return self._psl.privatesuffix(name)
        except (ValueError, UnicodeError):
            return None

    def organizational(self, domain: str) -> str:
        """RFC 7489 §3.2; a name that is itself a public suffix is its own organisational domain."""
        name = domain.rstrip(".").lower()
        return self.registrable(name) or name


@dataclass(frozen=True)
class DMARCRecord:
    """A parsed DMARC policy record (RFC 7489 §6.3). Unknown tags are kept in `other`."""

    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    rf: str = "afrf"
    ri: int = 86400
    other: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DMARCResult:
    """The DMARC verdict for one message.

    `policy` is the policy to apply: for a fail, p (or sp for a subdomain when the record came from
    the organisational domain), lowered one step when pct did not sample this message; "none" for
    anything else. `published_policy` is that policy before pct."""

    result: str                  # pass / fail / none / temperror / permerror
    policy: str = "none"         # none / quarantine / reject
    from_domain: str = ""
    org_domain: str = ""
    reason: str = ""
    published_policy: str = "none"
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record: DMARCRecord | None = None


# RFC 7489 §6.4 tag names. The value is what follows "=", stripped: a pattern ending "(.*?)\s*$" did the
# same but was quadratic in a run of spaces (a 60 KB record from the From domain's zone: 20 s on the loop).
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _uris(value: str) -> tuple[str, ...]:
    # RFC 7489 §6.4: dmarc-uri *(*WSP "," *WSP dmarc-uri), each a URI with an optional "!size"
    return tuple(u.strip() for u in value.split(",") if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", u.strip()))


def parse_record(text: str) -> DMARCRecord:
    """Parse a DMARC TXT record. Raises DMARCSyntaxError when it is not a usable DMARC record.

    Lenient where RFC 7489 allows it: unknown tags are ignored (§6.3), invalid optional values fall
    back to their defaults, and a missing or invalid p= with a valid rua= reads as p=none (§6.6.3)."""
    parts = [p for p in text.split(";")]
    tags: dict[str, str] = {}
    for index, part in enumerate(parts):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals or not _TAG_NAME.fullmatch(name):
            raise DMARCSyntaxError(f"malformed tag {part.strip()[:40]!r}")
        name, value = name.lower(), value.strip()
        if index == 0 and name != "v":
            raise DMARCSyntaxError("v= must be the first tag")
        tags.setdefault(name, value)
    if tags.get("v", "").upper() != "DMARC1":
        raise DMARCSyntaxError("not a DMARC1 record")
    rua = _uris(tags.get("rua", ""))
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        if not rua:
            raise DMARCSyntaxError("p= missing or invalid (or sp= invalid) and no rua=")
        p, sp = "none", None
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    if not 0 <= pct <= 100:
        pct = 100
    try:
        ri = int(tags.get("ri", "86400"))
    except ValueError:
        ri = 86400
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    known = {"v", "p", "sp", "pct", "adkim", "aspf", "rua", "ruf", "fo", "rf", "ri"}
    return DMARCRecord(
        p=p, sp=sp, pct=pct,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        rua=rua, ruf=_uris(tags.get("ruf", "")),
        fo=tags.get("fo", "0"), rf=tags.get("rf", "afrf"), ri=ri,
        other={k: v for k, v in tags.items() if k not in known},
    )


def from_header_domain(header_values: Sequence[str]) -> tuple[str | None, str]:
    """The RFC5322.From domain (RFC 7489 §6.6.1) from the values of every From header field.

    Returns (domain, "") or (None, reason) when there is no From, more than one, or not exactly one
    address domain: such messages cannot be evaluated."""
    if not header_values:
        return None, "no From header field"
    if len(header_values) > 1:
        return None, "more than one From header field"
    if len(header_values[0]) <= MEMO_FROM_LENGTH:
        return _single_from_domain(header_values[0])
    return _single_from_domain.__wrapped__(header_values[0])


# A From value this short has its domain (or the reason it has none) remembered per process: the
# standard library's getaddresses costs about 45 µs for one address, on every message, and the same
# authors write again and again. The bound keeps the memo under ~1 MB.
MEMO_FROM_LENGTH = 512


@functools.lru_cache(maxsize=2048)
def _single_from_domain(value: str) -> tuple[str | None, str]:
    """`from_header_domain` for exactly one From field."""
    addresses = [addr for _name, addr in getaddresses([value]) if addr]
    domains = {addr.rpartition("@")[2].strip().rstrip(".").lower() for addr in addresses}
    domains.discard("")
    if not addresses or not domains or any("@" not in a for a in addresses):
        return None, "From header field has no address with a domain"
    if len(domains) > 1:
        return None, "From header field has addresses in more than one domain"
    domain = domains.pop()
    if not re.fullmatch(r"[^\s\[\]()<>@,;:\\\"]+", domain):
        return None, "From domain is not a domain name"
    return domain, ""


def aligned(identifier: str, author_domain: str, mode: str, org: OrganizationalDomains) -> bool:
    """Identifier alignment (RFC 7489 §3.1): strict = same name, relaxed = same organisational domain."""
    a = ascii_name(identifier)
    b = ascii_name(author_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    return mode != "s" and org.organizational(a) == org.organizational(b)


async def _fetch(resolver: DNSLookup, domain: str) -> list[str]:
    """DMARC records at _dmarc.<domain>; [] when none. DNSTempError propagates."""
    try:
        records = await resolver.txt(f"_dmarc.{domain}")
    except DNSNotFound:
        return []
    # RFC 7489 §6.6.3 step 2: keep only records starting with v=DMARC1
    return [r for r in records if re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", r, re.I)]


async def discover(resolver: DNSLookup, domain: str, org: OrganizationalDomains,
                   ) -> tuple[str | None, list[str]]:
    """RFC 7489 §6.6.3: the records at the author domain, else at its organisational domain.

    Returns (the domain the records were found at, records); (None, []) when there are none.
    Raises DNSTempError."""
    records = await _fetch(resolver, domain)
    if records:
        return domain, records
    org_domain = org.organizational(domain)
    if org_domain != domain:
        records = await _fetch(resolver, org_domain)
        if records:
            return org_domain, records
    return None, []


async def check_dmarc(resolver: DNSLookup, author_domain: str, spf: SPFResult | None,
                      dkim: Sequence[DKIMResult], org: OrganizationalDomains, *,
                      sample: Callable[[], float] = random.random) -> DMARCResult:
    """Evaluate DMARC for a message whose RFC5322.From domain is `author_domain`.

    `spf` is the MAIL FROM (or, for a null sender, HELO) SPF result; `dkim` every DKIM result.
    `sample` returns a float in [0, 1) and decides pct sampling (RFC 7489 §6.6.4); tests pass a fixed
    one."""
    domain = ascii_name(author_domain)
    org_domain = org.organizational(domain)
    base = {"from_domain": domain, "org_domain": org_domain}
    try:
        found_at, records = await discover(resolver, domain, org)
    except DNSTempError as exc:
        return DMARCResult("temperror", reason=f"policy lookup failed: {exc.reason}", **base)
    if not records:
        return DMARCResult("none", reason="no DMARC record", **base)
    if len(records) > 1:
        # RFC 7489 §6.6.3 step 2: several records -> DMARC is not applied
        return DMARCResult("none", reason=f"more than one DMARC record at _dmarc.{found_at}", **base)
    try:
        record = parse_record(records[0])
    except DMARCSyntaxError as exc:
        return DMARCResult("permerror", reason=f"unusable record at _dmarc.{found_at}: {exc}", **base)

    spf_ok = bool(spf and spf.result == "pass" and aligned(spf.domain, domain, record.aspf, org))
    dkim_ok = any(r.result == "pass" and aligned(r.domain, domain, record.adkim, org) for r in dkim)
    # RFC 7489 §6.3 sp: for subdomains of the organisational domain, when its record is the one found
    published = record.sp if (found_at != domain and record.sp) else record.p
    common = {**base, "published_policy": published, "spf_aligned": spf_ok, "dkim_aligned": dkim_ok,
              "record": record}
    if spf_ok or dkim_ok:
        how = " and ".join(n for n, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
        return DMARCResult("pass", "none", reason=f"aligned {how} pass", **common)
    policy = published
    reason = "no aligned SPF or DKIM pass"
    if record.pct < 100 and not sample() * 100 < record.pct:
        policy = _WEAKER[published]  # RFC 7489 §6.6.4
        reason += f"; not sampled by pct={record.pct}"
    return DMARCResult("fail", policy, reason=reason, **common)
