"""Where mail for a domain goes: a configured transport, or the domain's MX hosts, in the order to try.

Owns the routing decision (RFC 5321 §5.1): a transport from `[queue.transports]` (the domain's own, else
'*', the smarthost) wins; otherwise MX records by preference with equal preferences shuffled, the
implicit MX (the domain itself) when there are none, and a null MX (RFC 7505) as a permanent failure.
Host addresses are looked up one host at a time, when that host's turn comes. A domain's MTA-STS policy
(`smtp_out.mtasts`, RFC 8461 §4), when in enforce mode, keeps only the MX hosts it names and makes TLS
to each required and verified; no host left is a temporary failure (the policy may change).

DNS comes through a `DNSLookup` handed in, policies through a `Policies`. It opens no connections.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

from config.settings import QueueSettings
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.mtasts import Policy

TLSMode = Literal["opportunistic", "required", "implicit"]

_SCHEMES: dict[str, tuple[TLSMode, int]] = {
    "smtp": ("opportunistic", 25),
    "smtp+starttls": ("required", 587),
    "smtps": ("implicit", 465),
}


@dataclass(frozen=True)
class Hop:
    """One server to try: its name (for TLS verification, logs and Remote-MTA), port and TLS policy."""

    name: str
    port: int
    tls: TLSMode
    username: str | None = None
    password: str | None = None
    via_transport: bool = False
    sts: bool = False  # TLS required by the domain's MTA-STS policy (TLS-RPT's policy type "sts")

    @property
    def key(self) -> str:
        """The destination as the breaker and the concurrency limit know it."""
        return f"{self.name}:{self.port}"


class Policies(Protocol):
    """Where MTA-STS policies come from (`smtp_out.mtasts.PolicySource`)."""

    async def policy(self, domain: str) -> Policy | None: ...


class RouteError(Exception):
    """No hop can be had for a domain. `permanent` decides bounce or retry; `status` is RFC 3463."""

    def __init__(self, reply: str, status: str, permanent: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.status = status
        self.permanent = permanent


def parse_transport(url: str) -> Hop:
    """A `[queue.transports]` URL (already validated by the config) as a hop."""
    parts = urlsplit(url)
    tls, default_port = _SCHEMES[parts.scheme]
    return Hop(name=parts.hostname or "", port=parts.port or default_port, tls=tls,
               username=unquote(parts.username) if parts.username else None,
               password=unquote(parts.password) if parts.password else None, via_transport=True)


def is_null_mx(records: list[tuple[int, str]]) -> bool:
    """RFC 7505 §3: a single MX whose exchange is the root ('.'): the domain accepts no mail."""
    return any(host in ("", ".") for _, host in records)


def order_mx(records: list[tuple[int, str]], rng: random.Random | None = None) -> list[str]:
    """MX hosts by preference, lowest first, equal preferences in random order (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    keyed = [(pref, rng.random(), host.rstrip(".").lower()) for pref, host in records]
    out: list[str] = []
    for _, _, host in sorted(keyed):
        if host not in out:
            out.append(host)
    return out


async def route(domain: str, settings: QueueSettings, dns: DNSLookup | None,
                rng: random.Random | None = None, policies: Policies | None = None) -> list[Hop]:
    """The hops to try for `domain`, in order; RouteError when there is none."""
    hops = await _mx_route(domain, settings, dns, rng)
    if policies is None or hops[0].via_transport or hops[0].tls != "opportunistic":
        return hops
    policy = await policies.policy(domain)
    if policy is None or not policy.enforced:
        return hops
    allowed = [dataclasses.replace(h, tls="required", sts=True) for h in hops if policy.allows(h.name)]
    if not allowed:
        raise RouteError(f"no MX host of {domain} is allowed by its MTA-STS policy", "4.7.5", False)
    return allowed


async def _mx_route(domain: str, settings: QueueSettings, dns: DNSLookup | None,
                    rng: random.Random | None) -> list[Hop]:
    transport = settings.transports.get(domain) or settings.transports.get("*")
    if transport:
        return [parse_transport(transport)]
    if dns is None:
        raise RouteError("no DNS resolver configured and no transport for this domain", "4.4.3", False)
    tls: TLSMode = "required" if domain in settings.require_tls else "opportunistic"
    try:
        records = await dns.mx(domain)
    except DNSNotFound as exc:
        if exc.nxdomain:
            raise RouteError(f"domain {domain} does not exist", "5.1.2", True) from None
        # RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
        return [Hop(name=domain, port=settings.mx_port, tls=tls)]
    except DNSTempError as exc:
        raise RouteError(f"MX lookup failed: {exc.reason}", "4.4.3", False) from None
    if is_null_mx(records):
        # RFC 7505 §4.1: a null MX means the domain accepts no mail; fail at once, no retries.
        raise RouteError(f"556 5.1.10 {domain} does not accept mail (null MX)", "5.1.10", True)
    return [Hop(name=host, port=settings.mx_port, tls=tls) for host in order_mx(records, rng)]


async def addresses(hop: Hop, dns: DNSLookup | None) -> list[str]:
    """The IP addresses of a hop to try in turn (IPv4 first). A transport's host name is left to the
    system resolver when no DNSLookup is given. DNSTempError and DNSNotFound pass through."""
    try:
        ipaddress.ip_address(hop.name)
        return [hop.name]
    except ValueError:
        pass
    if dns is None or (hop.via_transport and hop.name == "localhost"):
        return [hop.name]
    found: list[str] = []
    temp: DNSTempError | None = None
    for lookup in (dns.a, dns.aaaa):
        try:
            found += await lookup(hop.name)
        except DNSNotFound:
            continue
        except DNSTempError as exc:
            temp = exc
    if not found:
        if temp is not None:
            raise temp
        raise DNSNotFound(hop.name, "A/AAAA", nxdomain=False)
    return found
