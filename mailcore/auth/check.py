"""The one entry point for inbound sender authentication: SPF, DKIM, ARC and DMARC for a received message,
the Authentication-Results value that reports them, and what should happen to the message.

It owns the disposition policy (RFC 7489 §6.6.2, §10.1 under the operator's `AuthPolicySettings`):

    accept       nothing to act on (or enforce is off: results are recorded only)
    quarantine   DMARC fail whose applied policy maps to quarantine
    reject       DMARC fail whose applied policy maps to reject
    tempfail     DMARC could not be decided because of a DNS temporary error: its own policy lookup,
                 or an SPF/DKIM temperror on an identifier that could have aligned while the policy
                 asks for quarantine/reject (RFC 7489 §6.6.2: a receiver MAY defer)

It must not speak SMTP (the handler turns the disposition into a reply) nor modify the message beyond
what `mailcore.auth.results` offers.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import dkim as dkimpy

from config.settings import AuthPolicySettings
from mailcore.auth.arc import ARCResult, verify_arc
from mailcore.auth.dkim import DKIMResult, verify_dkim
from mailcore.auth.dmarc import DMARCResult, OrganizationalDomains, aligned, check_dmarc, from_header_domain
from mailcore.auth.results import authentication_results
from mailcore.auth.spf import SPFResult, check_spf
from mailcore.dns import DNSLookup
from mailcore.headers import field_values

T = TypeVar("T")

DISPOSITIONS = ("accept", "quarantine", "reject", "tempfail")


@dataclass(frozen=True)
class AuthVerdict:
    """Everything learnt about a message's sender, and what to do with the message."""

    disposition: str            # accept / quarantine / reject / tempfail
    header: str                 # Authentication-Results value (no field name)
    spf: SPFResult
    dkim: tuple[DKIMResult, ...]
    dmarc: DMARCResult
    arc: ARCResult
    reason: str = ""


def _disposition(dmarc: DMARCResult, spf: SPFResult, dkim: tuple[DKIMResult, ...],
                 policy: AuthPolicySettings, org: OrganizationalDomains) -> tuple[str, str]:
    if not policy.enforce:
        return "accept", "enforcement off: results recorded only"
    if dmarc.result == "temperror":
        return "tempfail", f"DMARC undecided: {dmarc.reason}"
    if dmarc.result != "fail" or dmarc.policy == "none":
        return "accept", ""
    record = dmarc.record
    if record is not None:
        spf_maybe = spf.result == "temperror" and aligned(spf.domain, dmarc.from_domain, record.aspf, org)
        dkim_maybe = any(r.result == "temperror" and aligned(r.domain, dmarc.from_domain, record.adkim, org)
                         for r in dkim)
        if spf_maybe or dkim_maybe:
            return "tempfail", "DMARC fail may be due to a DNS temporary error on an aligned identifier"
    action = policy.dmarc_reject if dmarc.policy == "reject" else policy.dmarc_quarantine
    if action == "none":
        return "accept", f"DMARC p={dmarc.policy} failure overridden by local policy"
    return action, f"DMARC {dmarc.result} with p={dmarc.policy} for {dmarc.from_domain}"


_ARC_HEADERS = frozenset((b"arc-seal", b"arc-message-signature", b"arc-authentication-results"))
_SIGNATURE_HEADERS = (b"dkim-signature", *_ARC_HEADERS)
# Where dkimpy's parser (lines split on CR? LF) meets its first empty line: the end of the header block,
# found from its LF (a pattern starting with a literal lets re skip to each LF; one starting with the
# optional CR is tried at every offset, 20 µs over a typical header), then the CR before it, if any.
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# A header block dkimpy's rfc822_parse takes without MessageFormatError: a first line that is a field
# ("name:" with printable name) or a "From " line, then lines that are also continuations (WSP first).
# The name stops at its first colon, as dkimpy's lazy match does: a name that may hold colons lets a
# line like "a:a:a:a" match in as many ways as it has colons, and a block that fails at its end then
# retries every combination of every line (exponential: ten such lines held the loop for seconds).
_DKIMPY_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:|From )[^\n]*"
                           rb"(?:\n(?:[\t ]|[\x21-\x39\x3b-\x7e]+:|From )[^\n]*)*\n?")


# The shortcut reads header blocks up to this size on the loop thread; a larger one goes to the verifiers
# in their worker threads, as one dkimpy refuses does: a 50 MB header block ending in a line that is no
# field cost 7 s of dkimpy's line-by-line parse on the loop. Real header blocks are a few KB.
SHORTCUT_BLOCK = 256 * 1024
# A message over this size has its From fields read in a worker thread (0.2 s for a 50 MB header block).
FROM_IN_THREAD = 1024 * 1024


def _header_names(raw: bytes) -> set[bytes] | None:
    """The lower-cased names of the header fields exactly as dkimpy parses them (from the header block
    only), or None when dkimpy would refuse the header block: the verifiers then say so themselves.

    Only the names in `_SIGNATURE_HEADERS` matter to the caller. A block that dkimpy accepts (every
    line a field, a continuation or a "From " line: `_DKIMPY_BLOCK`) and whose bytes name none of them
    cannot hold such a field, and most mail is like that: then dkimpy's line-by-line parse (a tenth of
    the sender checks' CPU) is skipped and an empty set returned; any other block takes the parse."""
    if raw.startswith((b"\n", b"\r\n")):
        return set()
    end = _EMPTY_LINE.search(raw, 0, SHORTCUT_BLOCK)
    if end is None:
        if len(raw) > SHORTCUT_BLOCK:
            return None  # a huge header block: parsing it here would hold the loop (seconds for 50 MB)
        block = raw
    else:
        cut = end.start()
        block = raw[:cut - 1] if raw[cut - 1:cut] == b"\r" else raw[:cut]
    lowered = block.lower()
    if not any(name in lowered for name in _SIGNATURE_HEADERS) and _DKIMPY_BLOCK.fullmatch(block):
        return set()
    try:
        fields, _ = dkimpy.rfc822_parse(block)
    except (dkimpy.MessageFormatError, IndexError):  # IndexError: a first line that is a continuation
        return None
    return {name.lower() for name, _ in fields}


async def _awaitable(value: Awaitable[T] | T) -> T:
    """A result known already, or the work that will give it, as something gather can wait for."""
    if isinstance(value, Awaitable):
        return await value
    return value


async def authenticate_message(resolver: DNSLookup, raw: bytes, ip: str, helo: str, mail_from: str,
                               authserv_id: str, *, policy: AuthPolicySettings | None = None,
                               spf: SPFResult | None = None, helo_spf: SPFResult | None = None,
                               org: OrganizationalDomains | None = None,
                               sample: Callable[[], float] = random.random,
                               lookup_timeout: float = 10.0) -> AuthVerdict:
    """Authenticate a received message.

    `spf` may be computed earlier (at MAIL FROM) and passed in; it is computed here otherwise.
    `helo_spf`, the HELO identity's own result, is only reported (DMARC uses the MAIL FROM one). `org`
    should be built once by the caller and shared (loading the PSL is slow); a new one is built when
    omitted. `sample` drives DMARC pct sampling."""
    policy = policy or AuthPolicySettings()
    org = org or OrganizationalDomains()

    async def spf_result() -> SPFResult:
        if spf is not None:
            return spf
        return await check_spf(resolver, ip, mail_from, helo, receiver=authserv_id,
                               lookup_timeout=lookup_timeout)

    names = _header_names(raw)
    dkim_task: Awaitable[list[DKIMResult]] | list[DKIMResult]
    arc_task: Awaitable[ARCResult] | ARCResult
    # Most mail has no ARC set and much has no DKIM-Signature: their "none" needs no worker thread
    # (where dkimpy would parse the whole message twice more to find that out).
    if names is not None and b"dkim-signature" not in names:
        dkim_task = [DKIMResult("none", reason="message not signed")]
    else:
        dkim_task = verify_dkim(resolver, raw, lookup_timeout=lookup_timeout)
    if names is not None and names.isdisjoint(_ARC_HEADERS):
        arc_task = ARCResult("none", "Message is not ARC signed")
    else:
        arc_task = verify_arc(resolver, raw, lookup_timeout=lookup_timeout)
    if spf is not None and isinstance(dkim_task, list) and isinstance(arc_task, ARCResult):
        # Nothing to wait for (SPF done at MAIL, an unsigned message): no tasks for gather to make.
        spf_r, dkim_list, arc_r = spf, dkim_task, arc_task
    else:
        spf_r, dkim_list, arc_r = await asyncio.gather(spf_result(), _awaitable(dkim_task),
                                                       _awaitable(arc_task))
    dkim_r = tuple(dkim_list)
    if len(raw) > FROM_IN_THREAD:
        from_values = await asyncio.to_thread(field_values, raw, "from")
    else:
        from_values = field_values(raw, "from")
    domain, why = from_header_domain(from_values)
    if domain is None:
        dmarc_r = DMARCResult("permerror", reason=why)
    else:
        dmarc_r = await check_dmarc(resolver, domain, spf_r, dkim_r, org, sample=sample)
    disposition, reason = _disposition(dmarc_r, spf_r, dkim_r, policy, org)
    dis = {"accept": "none", "tempfail": "none"}.get(disposition, disposition)
    header = authentication_results(authserv_id, spf_r, dkim_r, dmarc_r, arc_r, mail_from=mail_from,
                                    helo=helo, dmarc_disposition=dis if dmarc_r.result == "fail" else "",
                                    helo_spf=helo_spf)
    return AuthVerdict(disposition, header, spf_r, dkim_r, dmarc_r, arc_r, reason)
