"""The DNS records an admin publishes for a hosted domain, as zone-file lines ready to paste.

Owns the wording and formatting of `mailserver dns` and of the TXT record `mailserver dkim generate`
prints: RFC 1035 §5.1 master-file lines, with TXT values split into character-strings of at most 255
octets (RFC 1035 §3.3.14, RFC 6376 §3.6.2.2), which a resolver joins back. Pure functions: no store, no
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailcore import mtasts
from mailcore.autoconfig import Endpoints

TTL = 3600
CHUNK = 255


@dataclass(frozen=True)
class KeyRecord:
    """One DKIM key as published: its selector and the TXT value (`v=DKIM1; k=...; p=...`)."""

    selector: str
    value: str
    signing: bool = False


def txt_strings(value: str) -> str:
    """A TXT value as quoted character-strings of at most 255 octets each (the value is ASCII)."""
    parts = [value[i:i + CHUNK] for i in range(0, len(value), CHUNK)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def zone_line(name: str, rtype: str, data: str, ttl: int = TTL) -> str:
    """One master-file line for an absolute owner name."""
    return f"{name.rstrip('.')}.\t{ttl}\tIN\t{rtype}\t{data}"


def dkim_name(domain: str, selector: str) -> str:
    """Where a selector's key is published (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


def dkim_record(domain: str, key: KeyRecord) -> str:
    return zone_line(dkim_name(domain, key.selector), "TXT", txt_strings(key.value))


def client_records(domain: str, endpoints: Endpoints) -> list[str]:
    """What lets mail clients find this server from an address alone: the `autoconfig.` and
    `autodiscover.` names (Thunderbird and Outlook fetch them over HTTPS) and the RFC 6186 SRV records
    of the IMAP and submission listeners that are on (a listener that is off is published as "not
    offered here": target "." per RFC 6186 §4)."""
    host = endpoints.hostname.lower().rstrip(".")
    out = ["; Client configuration. Thunderbird fetches https://autoconfig.<domain>/mail/config-v1.1.xml and",
           "; Outlook https://autodiscover.<domain>/autodiscover/autodiscover.xml: point both names at",
           f"; {host}, and serve the HTTP API (http.listener) there on port 443 (or proxy 443 to it).",
           zone_line(f"autoconfig.{domain}", "CNAME", f"{host}."),
           zone_line(f"autodiscover.{domain}", "CNAME", f"{host}."),
           zone_line(f"_autodiscover._tcp.{domain}", "SRV", f"0 1 443 {host}."),
           "; RFC 6186 SRV records: where IMAP and submission are (priority 0 is preferred; RFC 8314",
           ";   asks clients to prefer implicit TLS, so those come first).",]
    for service, port, priority in (("_imaps", endpoints.imaps, 0), ("_imap", endpoints.imap, 10),
                                    ("_submissions", endpoints.submissions, 0),
                                    ("_submission", endpoints.submission, 10)):
        data = f"{priority} 1 {port} {host}." if port else "0 0 0 ."  # RFC 6186 §4: not offered
        out.append(zone_line(f"{service}._tcp.{domain}", "SRV", data))
    return out


def mta_sts_records(domain: str, host: str, mode: str) -> list[str]:
    """MTA-STS (RFC 8461): the `_mta-sts` record with our policy's id, and `mta-sts.<domain>`, whose
    HTTPS server (the HTTP API) serves the policy; TLS-RPT (RFC 8460) reports to postmaster."""
    _, policy_id = mtasts.published(mode, [host])
    return [f"; MTA-STS (RFC 8461): senders that support it deliver to {host} only over verified TLS",
            f";   (mode {mode}). The policy is served at https://mta-sts.{domain}/.well-known/mta-sts.txt:",
            f";   serve the HTTP API (http.listener) on port 443 of {host}, with a certificate for mta-sts.{domain}.",
            zone_line(f"mta-sts.{domain}", "CNAME", f"{host}."),
            zone_line(f"_mta-sts.{domain}", "TXT", txt_strings(f"v=STSv1; id={policy_id}")),
            "; TLS-RPT (RFC 8460): where senders report TLS failures reaching us.",
            zone_line(f"_smtp._tls.{domain}", "TXT", txt_strings(f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"))]


def domain_records(domain: str, hostname: str, keys: Sequence[KeyRecord],
                   endpoints: Endpoints | None = None, mta_sts_mode: str = "none") -> list[str]:
    """Every record a hosted domain needs, with comments, in zone-file form. With `endpoints`, also
    the client-configuration records (`client_records`); with an MTA-STS mode other than none, the
    records announcing our policy (`mta_sts_records`)."""
    domain = domain.lower().rstrip(".")
    host = hostname.lower().rstrip(".")
    out = [f"; DNS records for {domain}: paste into its zone (TTLs are suggestions).",
           f"; Mail for {domain} is received by {host} (RFC 5321 §5.1).",
           zone_line(domain, "MX", f"10 {host}."),
           f"; {host} needs A/AAAA records with this server's public addresses, and each address a PTR",
           f"; record naming {host} (reverse DNS, set by whoever owns the address).",
           "; SPF (RFC 7208): only the MX hosts of the domain send its mail; everything else fails.",
           zone_line(domain, "TXT", txt_strings("v=spf1 mx -all"))]
    if keys:
        out.append("; DKIM (RFC 6376): the newest key signs; keep older ones published until mail signed")
        out.append(";   with them has been delivered (a few days).")
        out.extend(dkim_record(domain, k) for k in keys)
    else:
        out.append(f"; DKIM: no key yet. Run: mailserver dkim generate {domain}")
    out += ["; DMARC (RFC 7489): ask receivers to quarantine mail failing SPF and DKIM alignment, and",
            f";   to send aggregate reports to postmaster@{domain}.",
            zone_line(f"_dmarc.{domain}", "TXT",
                      txt_strings(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"))]
    if mta_sts_mode != "none":
        out += mta_sts_records(domain, host, mta_sts_mode)
    if endpoints is not None:
        out += client_records(domain, endpoints)
    return out
