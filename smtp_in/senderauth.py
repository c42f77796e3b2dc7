"""Sender authentication on the MX: SPF while the envelope arrives, DKIM, ARC and DMARC at end of data.

`SenderAuthentication` fills two stages of `smtp_in.checks`:

- sender: `start_spf` begins the SPF checks of MAIL FROM and of the HELO name (RFC 7208 §2.4, §2.3) as a
  task when MAIL is accepted, so the DNS work overlaps RCPT and DATA; the transaction holds the task.
  Results for the same (client IP, HELO, MAIL FROM) are reused for SPF_MEMO_SECONDS (not temperrors).
- body: `check` (a `BodyCheck`) runs `mailcore.auth.check.authenticate_message` with the SPF result from
  MAIL time, the one shared resolver and an `OrganizationalDomains` built once per process, and turns
  its disposition into a `BodyVerdict` carrying the Authentication-Results value (RFC 8601):

      accept -> deliver to INBOX        quarantine -> deliver to Junk
      reject -> 550 5.7.1               tempfail   -> 451 4.7.1 (the sender retries; never a 5xx)

Every wait is bounded: each DNS answer by the resolver's timeout (`dns.timeout`), SPF and the end-of-data
check each by `auth.timeout`, past which the result is a temperror. With `auth.enforce` off (the --dev
profile) every result is recorded and nothing is refused. Submission never comes here: mail from our
own authenticated users gets no SPF/DMARC verdict.
It must not reply to the peer, touch the store or modify the message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from config.settings import AuthPolicySettings
from mailcore import replies
from mailcore.auth.check import authenticate_message
from mailcore.auth.dkim import DKIMResult
from mailcore.auth.dmarc import DMARCResult, OrganizationalDomains
from mailcore.auth.results import authentication_results
from mailcore.auth.spf import SPFResult, check_helo, check_spf
from mailcore.dns import DNSLookup
from smtp_in.checks import Action, BodyVerdict, MessageContext, SenderResults

log = logging.getLogger("smtp_in.auth")

# A lookup waited for through the thread bridge gets a little longer than the resolver's own timeout,
# so that the resolver's answer (a clean temperror) normally comes first.
BRIDGE_MARGIN = 1.0

# The SPF results for one (client IP, HELO name, MAIL FROM) are reused for this long: a sender's next
# transactions (on the connection, or the next one) ask exactly the same questions, whose answers a DNS
# cache would hold for their TTL anyway (rarely under minutes). Temporary errors are never kept.
SPF_MEMO_SECONDS = 30.0
SPF_MEMO_SIZE = 10_000

_ACTIONS = {"accept": Action.ACCEPT, "quarantine": Action.QUARANTINE, "reject": Action.REJECT,
            "tempfail": Action.TEMPFAIL}
_REPLIES = {"reject": replies.DMARC_REJECTED, "tempfail": replies.CHECK_TEMPFAIL}


class SenderAuthentication:
    """SPF, DKIM, ARC and DMARC for the MX listener; see the module docstring. One per process."""

    def __init__(self, resolver: DNSLookup, authserv_id: str, policy: AuthPolicySettings, *,
                 dns_timeout: float, org: OrganizationalDomains) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.policy = policy
        self.org = org
        self.lookup_timeout = dns_timeout + BRIDGE_MARGIN
        self.timeout = policy.timeout
        self._spf_memo: dict[tuple[str, str, str], tuple[float, SenderResults]] = {}

    # --- sender stage -------------------------------------------------------------------------------

    def start_spf(self, ip: str, helo: str, mail_from: str) -> asyncio.Task[SenderResults]:
        """Begin the SPF checks for a transaction; the task never raises (errors are temperror)."""
        return asyncio.create_task(self._spf(ip, helo, mail_from), name="spf")

    async def _spf(self, ip: str, helo: str, mail_from: str) -> SenderResults:
        key = (ip, helo, mail_from)
        now = asyncio.get_running_loop().time()
        hit = self._spf_memo.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        results = await self._evaluate_spf(ip, helo, mail_from)
        if "temperror" not in (results.spf.result, results.helo_spf.result if results.helo_spf else None):
            if len(self._spf_memo) >= SPF_MEMO_SIZE:
                self._spf_memo.clear()
            self._spf_memo[key] = (now + SPF_MEMO_SECONDS, results)
        return results

    async def _evaluate_spf(self, ip: str, helo: str, mail_from: str) -> SenderResults:
        domain = mail_from.rpartition("@")[2] if mail_from else helo
        try:
            ipaddress.ip_address(ip)
        except ValueError:  # not an IP connection (a Unix socket): SPF has nothing to evaluate
            return SenderResults(SPFResult("none", domain, smtp_comment="client address unknown"))
        kwargs = {"receiver": self.authserv_id, "lookup_timeout": self.lookup_timeout,
                  "total_timeout": self.timeout}
        try:
            if mail_from and helo:
                spf, helo_spf = await asyncio.gather(check_spf(self.resolver, ip, mail_from, helo, **kwargs),
                                                     check_helo(self.resolver, ip, helo, **kwargs))
                return SenderResults(spf, helo_spf)
            return SenderResults(await check_spf(self.resolver, ip, mail_from, helo, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug, never the peer's fault: record temperror, keep the cause in the log
            log.exception("SPF check failed", extra={"peer": ip, "mail_from": mail_from})
            return SenderResults(SPFResult("temperror", domain, smtp_comment="internal error"))

    # --- body stage ---------------------------------------------------------------------------------

    async def check(self, ctx: MessageContext, message: bytes | bytearray) -> BodyVerdict:
        """Authenticate the whole message; see the module docstring for the verdicts."""
        sender = ctx.sender_results
        raw = bytes(message)  # the worker threads keep reading it even if we stop waiting
        try:
            async with asyncio.timeout(self.timeout):
                verdict = await authenticate_message(
                    self.resolver, raw, ctx.peer_ip, ctx.helo, ctx.mail_from, self.authserv_id,
                    policy=self.policy, spf=sender.spf if sender else None,
                    helo_spf=sender.helo_spf if sender else None, org=self.org,
                    lookup_timeout=self.lookup_timeout)
        except TimeoutError:
            return self._timed_out(ctx, sender)
        # One log line per accepted message is the session's; an accepted verdict is in the message's
        # Authentication-Results already, so only one that acts on the message is logged at info.
        level = logging.DEBUG if verdict.disposition == "accept" else logging.INFO
        log.log(level, "sender authentication", extra={
            "peer": ctx.peer_ip, "mail_from": ctx.mail_from, "spf": verdict.spf.result,
            "dkim": ",".join(r.result for r in verdict.dkim), "dmarc": verdict.dmarc.result,
            "arc": verdict.arc.result, "disposition": verdict.disposition, "reason": verdict.reason})
        return BodyVerdict(_ACTIONS[verdict.disposition], _REPLIES.get(verdict.disposition), verdict.header)

    def _timed_out(self, ctx: MessageContext, sender: SenderResults | None) -> BodyVerdict:
        """The check took longer than `auth.timeout`: everything undecided is a temperror."""
        why = "authentication timed out"
        header = authentication_results(
            self.authserv_id, sender.spf if sender else None, [DKIMResult("temperror", reason=why)],
            DMARCResult("temperror", reason=why), None, mail_from=ctx.mail_from, helo=ctx.helo,
            helo_spf=sender.helo_spf if sender else None)
        log.warning("sender authentication timed out", extra={"peer": ctx.peer_ip, "mail_from": ctx.mail_from,
                                                              "timeout": self.timeout})
        if not self.policy.enforce:
            return BodyVerdict(Action.ACCEPT, None, header)
        return BodyVerdict(Action.TEMPFAIL, replies.CHECK_TEMPFAIL, header)
