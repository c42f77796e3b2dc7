"""ARC (RFC 8617): validate the Authenticated Received Chain of a message.

dkimpy's `arc_verify` does the validation; this module owns the seams: it runs in a worker thread,
its key lookups go through our `DNSLookup` (`dnsfunc=` and `mailcore.dns.bridge`), and its three-way
answer becomes an `ARCResult` with the RFC 8617 §4.4 chain validation status: none, pass or fail.

A key that cannot be fetched for a temporary DNS reason makes the chain fail for now (the reason says
so): RFC 8617 has no temperror, and ARC only informs local policy. ARC sealing is not done here.
It must not decide what the result does to a message.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import dkim as dkimpy

from mailcore.auth.dkim import LibraryLogger, LinearARC, rsa_key_too_costly
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dns.bridge import LoopBridge

log = logging.getLogger(__name__)
_liblog = LibraryLogger(__name__ + ".dkimpy")

DEFAULT_LOOKUP_TIMEOUT = 10.0
MIN_RSA_BITS = 1024


@dataclass(frozen=True)
class ARCResult:
    """The chain validation status (RFC 8617 §4.4): none, pass or fail, with why."""

    result: str
    reason: str = ""
    instances: int = 0                       # ARC sets found (highest i=)
    domains: tuple[str, ...] = field(default=())  # d= of each ARC-Seal, newest first


class _KeyLookup:
    """dkimpy's `dnsfunc` for one validation: notes temporary failures so the reason can say so."""

    def __init__(self, bridge: LoopBridge, resolver: DNSLookup) -> None:
        self.bridge = bridge
        self.resolver = resolver
        self.temporary: list[str] = []
        self.refused: list[str] = []  # keys too costly to verify with (mailcore.auth.dkim.MAX_RSA_BITS)

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        qname = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".")
        try:
            records = self.bridge.call(functools.partial(self.resolver.txt, qname), f"{qname} TXT")
        except DNSNotFound:
            return None  # dkimpy: missing key -> that signature does not validate
        except DNSTempError as exc:
            self.temporary.append(qname)
            raise dkimpy.DnsTimeoutError(str(exc)) from exc
        record = records[0].encode("utf-8", "replace")
        try:
            pk, _size, ktag, _tlsrpt = dkimpy.evaluate_pk(qname, record)
        except Exception:  # noqa: BLE001 - unusable keys are dkimpy's to report when it parses them again
            return record
        too_costly = rsa_key_too_costly(pk, ktag)
        if too_costly:
            self.refused.append(f"{qname}: {too_costly}")
            return None  # dkimpy: no usable key -> that signature does not validate
        return record


# RFC 8617 §4.2.1: instance values are 1-50; a validator that finds more sets fails the chain (§5.2).
# dkimpy verifies every set before it looks at the results: each costs two key lookups, a body hash and
# two RSA verifications, and the seals hash all sets below them (quadratic in the number of sets).
MAX_INSTANCES = 50


def _validate(raw: bytes, lookup: _KeyLookup, minkey: int) -> ARCResult:
    """Runs in the worker thread."""
    try:
        chain = LinearARC(raw, logger=_liblog, minkey=minkey)
        instances, _headers = chain.sorted_arc_headers()
        if instances > MAX_INSTANCES:
            return ARCResult("fail", f"more than {MAX_INSTANCES} ARC sets (RFC 8617 §4.2.1)", instances)
        try:  # what dkimpy.arc_verify does, with our verifier class
            cv, details, reason = chain.verify(dnsfunc=lookup)
        except dkimpy.DKIMException as exc:
            cv, details, reason = dkimpy.CV_Fail, [], str(exc)
    except dkimpy.MessageFormatError as exc:
        return ARCResult("fail", f"message unparsable: {exc}")
    except Exception as exc:  # noqa: BLE001 - dkimpy on hostile input, see below
        # dkimpy raises more than its own exceptions on hostile ARC sets: IndexError for an AMS whose
        # i= it cannot find again in the raw field ("i=1" last, or no space before it) or a first
        # header line that is a continuation; ValueError (binascii.Error, int() of over 4300 digits)
        # for b=, bh=, x=, t= values. A chain that cannot be processed is a failed chain.
        log.debug("dkimpy failed on an ARC chain", exc_info=exc)
        return ARCResult("fail", "ARC set could not be processed")
    instances = max((d.get("instance", 0) for d in details), default=0)
    domains = tuple(d.get("as-domain", b"").decode("ascii", "replace") if isinstance(d.get("as-domain"), bytes)
                    else str(d.get("as-domain", "")) for d in details)
    if cv == dkimpy.CV_Pass:
        return ARCResult("pass", str(reason), instances, domains)
    if cv == dkimpy.CV_None:
        return ARCResult("none", str(reason), instances, domains)
    text = str(reason)
    if lookup.temporary:
        text += f" (temporary DNS failure for {', '.join(lookup.temporary)})"
    if lookup.refused:
        text += f" (key refused: {', '.join(lookup.refused)})"
    # cv None from dkimpy: an ARC-Seal with cv=fail terminates the chain: it is a failed chain.
    return ARCResult("fail", text, instances, domains)


async def verify_arc(resolver: DNSLookup, raw: bytes, *, minkey: int = MIN_RSA_BITS,
                     lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT) -> ARCResult:
    """Validate the ARC chain of `raw` (a whole message). Never raises for anything the message or
    DNS can do."""
    bridge = LoopBridge(lookup_timeout)
    return await bridge.run(_validate, raw, _KeyLookup(bridge, resolver), minkey)
