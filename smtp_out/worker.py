"""The queue workers: claim due entries, sign once, deliver per destination, record, retry or bounce.

`Outbound` does the work for one entry at a time and can be driven directly (`run_once`), which is how
tests move time with a hand-made clock. `QueueService` is the long-running `Service`: one claimer woken
by LISTEN 'queue_changes' or the poll interval that leases due entries in batches and runs up to
`queue.workers` deliveries at once, a heartbeat that keeps their leases alive while deliveries are slow,
and a shutdown that lets in-flight deliveries finish within the grace period and hands back the leases of
those that do not.

Guarantees: an entry is worked on by one worker at a time (the lease); a worker that dies leaves its
claims to be retried once the lease expires; results and DSNs are committed in one transaction, fenced
by the lease. So delivery is at-least-once: a duplicate needs a crash between the remote's 250 and that
commit. It never imports smtp_in, imap or mailserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from config.settings import Settings
from mailcore.auth import signing
from mailcore.auth.dkim import sign_message
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.metrics import Metrics
from smtp_out import bounce, client
from smtp_out.breaker import CircuitBreaker
from smtp_out.mtasts import PolicySource
from smtp_out.retry import Clock, backoff, utc_now
from smtp_out.routing import Hop, RouteError, addresses, route
from smtp_out.tlsreports import TLSReporter
from smtp_out.tlsrpt import TLSOutcomes
from storage import dkim_keys
from storage import queue as store
from storage.db import UNAVAILABLE_ERRORS
from storage.queue import Outcome, QueuedRecipient, QueueEntry

log = logging.getLogger(__name__)

# How long a domain's signing key (or that it has none) is remembered.
KEY_CACHE_SECONDS = 30.0

# Messages up to LARGE_MESSAGE bytes come with their claim; larger ones are read when their delivery
# starts, and at most LARGE_AT_ONCE of them are in delivery at once, so that queue.workers deliveries in
# flight hold at most about workers x 256 KiB plus 4 x smtp.max_message_size (each a few copies: the
# message, the signed one, the dot-stuffed one), not workers x the largest message.
LARGE_MESSAGE = 256 * 1024
LARGE_AT_ONCE = 4

# sign(raw message, domain, selector, private key PEM, algorithm) -> header lines to prepend (CRLF only).
# It signs `mailcore.lineends.normalize_crlf(raw)`, the bytes `session.dot_stuffed` sends (RFC 6376 §5.3).
Signer = Callable[[bytes, str, str, str, str], bytes]


@dataclass
class DomainResult:
    """What one destination domain's recipients came to: outcomes, or held back by open breakers."""

    outcomes: list[Outcome] = field(default_factory=list)
    held_until: dt.datetime | None = None


class LeaseLost(Exception):
    """Another worker took the entry over while we worked on it; our results are discarded."""


class Outbound:
    """Delivers queue entries; see the module docstring. One per process (it holds the breakers)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, dns: DNSLookup | None = None, *,
                 clock: Clock = utc_now, rng: random.Random | None = None, signer: Signer | None = None,
                 owner: str | None = None, metrics: Metrics | None = None,
                 sessions: client.SessionCache | None = None, large_message: int = LARGE_MESSAGE,
                 large_at_once: int = LARGE_AT_ONCE) -> None:
        self.pool = pool
        self.settings = settings
        self.qs = settings.queue
        self.dns = dns
        self.clock = clock
        self.rng = rng or random.Random()
        self.signer = signer
        if signer is not None:
            signing.organizational_domains()  # the Public Suffix List, read now rather than on the loop later
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.breaker = CircuitBreaker(self.qs.breaker_failures, self.qs.breaker_cooldown, clock)
        self.metrics = metrics  # deliveries by outcome, counted once each attempt is recorded
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._keys: dict[str, tuple[float, dkim_keys.DKIMKey | None]] = {}  # domain -> (until, key)
        self.sessions = sessions  # idle SMTP sessions kept for the next message to the same place
        self.recorder = store.Recorder(pool, self.owner)  # attempts finishing together share a commit
        self.tls_outcomes = TLSOutcomes(clock)  # per recipient domain, for TLS-RPT; see flush_tls_outcomes
        self.large_message = large_message
        self._large = asyncio.Semaphore(large_at_once)
        # TLS-RPT reports (RFC 8460) of the counts above, once a day; signed as our DSNs are
        self.tls_reports = TLSReporter(pool, settings, dns, owner=self.owner, clock=clock, signer=self._dsn_signer)
        # recipients' MTA-STS policies (RFC 8461), fetched and kept by this process
        self.policies = (PolicySource(dns, port=self.qs.mta_sts_port, ca_file=self.qs.tls_ca_file, pool=pool)
                         if dns is not None and self.qs.mta_sts else None)

    # --- driving ---------------------------------------------------------------------------------------

    async def claim(self, limit: int = 1) -> list[QueueEntry]:
        """Lease up to `limit` due entries to this worker."""
        return await store.claim(self.pool, self.owner, self.clock(), self.qs.lease_seconds, limit,
                                 self.large_message)

    async def run_once(self) -> int:
        """Deliver every entry due now, one after another; return how many were worked on."""
        done = 0
        while entries := await self.claim():
            for entry in entries:
                await self.process(entry)
                done += 1
        await self.flush_tls_outcomes()
        return done

    async def flush_tls_outcomes(self) -> None:
        """Write the TLS outcomes counted since the last call (`smtp_out.tlsrpt`)."""
        await self.tls_outcomes.flush(self.pool)

    async def process(self, entry: QueueEntry) -> None:
        """One attempt at every unfinished recipient of a claimed entry, then record it."""
        if entry.raw is not None:
            await self._attempt(entry)
            return
        async with self._large:  # a large message, not claimed with its entry: a few at a time
            await self._attempt(entry)

    async def _attempt(self, entry: QueueEntry) -> None:
        try:
            raw = entry.raw if entry.raw is not None else await store.message_bytes(self.pool, entry.message_id)
            prefix = entry.signed_prefix if entry.signed else await self._sign(entry, raw)
            # Line endings are left to the one rule the signer and the DATA writer both apply
            # (`normalize_crlf`): normalising here as well would scan every message a third time, on
            # the loop, to save a second conversion only for the rare one with bare CRs or LFs.
            message = (prefix or b"") + raw
            by_domain: dict[str, list[QueuedRecipient]] = {}
            for r in entry.recipients:
                by_domain.setdefault(r.domain, []).append(r)
            results = await asyncio.gather(*[self._deliver_domain(domain, rcpts, entry, message)
                                             for domain, rcpts in by_domain.items()])
            await self._finish(entry, raw, list(results))
        except LeaseLost:
            log.warning("queue entry taken over by another worker; results discarded",
                        extra={"queue_id": entry.id})

    # --- signing ---------------------------------------------------------------------------------------

    async def _sign(self, entry: QueueEntry, raw: bytes) -> bytes | None:
        """DKIM-sign once, before the first attempt, and keep the signature for every later attempt.

        The key is the newest of the first domain of `signing.candidates` that has one: the From
        domain and its parents when in the envelope sender's organisation, then the envelope sender's;
        only for mail one of our accounts submitted (relayed mail is never signed; our DSNs are signed
        by their composer)."""
        prefix = None
        if self.signer is not None:
            domains = signing.candidates(raw, entry.sender, submitted=entry.account_id is not None)
            key = await self._signing_key(domains)
            if key is not None:
                try:
                    prefix = await asyncio.to_thread(self.signer, raw, key.domain, key.selector,
                                                     key.private_key, key.algorithm)
                except Exception:  # a broken key must not stop the mail: send it unsigned, loudly
                    log.exception("DKIM signing failed; sending unsigned", extra={"domain": key.domain})
        # Nothing to keep without a key: no write (and no commit to wait for); a later attempt looks
        # for a key again. A signature is kept so that every attempt sends the same one.
        if prefix is not None and not await store.save_signature(self.pool, entry.id, self.owner, prefix):
            raise LeaseLost()
        return prefix

    async def _signing_key(self, domains: list[str]) -> dkim_keys.DKIMKey | None:
        """The newest key of the first of `domains` that has one (or None). Each domain's key (or that it
        has none) is remembered for KEY_CACHE_SECONDS: at most one query per half-minute for all the
        domains a message might be signed by, not one per message. A key added or removed takes effect
        within that time."""
        now = time.monotonic()
        known: dict[str, dkim_keys.DKIMKey | None] = {}
        for domain in domains:
            cached = self._keys.get(domain)
            if cached is None or cached[0] <= now:
                break  # not known (any more): ask for it and every later one in one query
            if cached[1] is not None:
                return cached[1]
            known[domain] = None
        missing = [d for d in domains if d not in known]
        if not missing:
            return None
        found = await dkim_keys.signing_keys(self.pool, missing)
        if len(self._keys) + len(missing) > 10_000:
            self._keys.clear()
        for domain in missing:
            self._keys[domain] = (now + KEY_CACHE_SECONDS, found.get(domain))
        return next((found[d] for d in missing if d in found), None)

    async def _dsn_signer(self) -> Callable[[bytes], bytes] | None:
        """How our DSNs are signed: by the key of the host name's domain or of a parent (their From is
        MAILER-DAEMON@server.hostname), or None when we hold neither. Large receivers treat unsigned
        bounces badly."""
        if self.signer is None:
            return None
        key = await self._signing_key(signing.host_domains(self.settings.server.hostname))
        if key is None:
            return None
        signer = self.signer
        return lambda raw: signer(raw, key.domain, key.selector, key.private_key, key.algorithm)

    # --- delivery --------------------------------------------------------------------------------------

    def _limit(self, key: str) -> asyncio.Semaphore:
        if key not in self._limits:
            self._limits[key] = asyncio.Semaphore(self.qs.max_per_destination)
        return self._limits[key]

    async def _deliver_domain(self, domain: str, rcpts: list[QueuedRecipient], entry: QueueEntry,
                              message: bytes) -> DomainResult:
        def every(status: str, reply: str, code: str, mta: str | None = None) -> DomainResult:
            return DomainResult([Outcome(r.id, status, reply, code, mta) for r in rcpts])  # type: ignore[arg-type]

        try:
            hops = await route(domain, self.qs, self.dns, self.rng, self.policies)
        except RouteError as exc:
            return every("bounced" if exc.permanent else "deferred", exc.reply, exc.status)
        env = client.Envelope(sender=entry.sender, message=message, envid=entry.envid, ret=entry.ret,
                              recipients=[client.Recipient(r.id, r.recipient, r.notify, r.orcpt) for r in rcpts])
        held_until: dt.datetime | None = None
        failure: tuple[str, str, str] | None = None
        for hop in hops:
            if not self.breaker.allow(hop.key):
                until = self.breaker.retry_at(hop.key)
                held_until = until if held_until is None or (until and until < held_until) else held_until
                continue
            try:
                results, failure = await self._try_hop(domain, hop, env, failure)
            except BaseException:
                self.breaker.abandon(hop.key)
                raise
            if results is not None:
                return DomainResult([Outcome(r.recipient_id, r.status, r.reply, r.status_code,  # type: ignore[arg-type]
                                             r.remote_mta) for r in results])
        if failure is not None:
            reply, code, mta = failure
            return every("deferred", reply, code, mta)
        return DomainResult(held_until=held_until)

    async def _try_hop(self, domain: str, hop: Hop, env: client.Envelope, failure: tuple[str, str, str] | None
                       ) -> tuple[list[client.RcptResult] | None, tuple[str, str, str] | None]:
        """Each address of one hop in turn. Returns results, or None with the latest failure."""
        try:
            addrs = await addresses(hop, self.dns)
        except (DNSNotFound, DNSTempError) as exc:
            self.breaker.abandon(hop.key)
            return None, (f"451 4.4.3 cannot resolve {hop.name}: {exc}", "4.4.3", hop.name)
        counts_for_breaker = False
        for address in addrs:
            try:
                async with self._limit(hop.key):
                    results = await client.deliver(hop, address, env, self.qs, self.settings.server.hostname,
                                                   self.sessions, self.tls_outcomes.recorder(domain, hop, address))
            except client.ConnectionFailed as exc:
                log.info("connection failed", extra={"host": hop.name, "address": address, "reason": exc.reason})
                failure = (f"451 {exc.status} {hop.name}[{address}]: {exc.reason}", exc.status, hop.name)
                counts_for_breaker = counts_for_breaker or exc.breaker
                continue
            self.breaker.success(hop.key)
            return results, failure
        if counts_for_breaker:
            self.breaker.failure(hop.key)
        else:
            self.breaker.abandon(hop.key)
        return None, failure

    # --- recording -------------------------------------------------------------------------------------

    async def _finish(self, entry: QueueEntry, raw: bytes, results: list[DomainResult]) -> None:
        now = self.clock()
        expired = now >= entry.created_at + dt.timedelta(seconds=self.qs.give_up_after)
        outcomes = [o for r in results for o in r.outcomes]
        attempted = {o.recipient_id for o in outcomes}
        if expired:
            # Give up (RFC 5321 §4.5.4.1): what is still temporary becomes a failure, held mail included.
            by_id = {r.id: r for r in entry.recipients}
            outcomes = [Outcome(o.recipient_id, "bounced", o.reply, "4.4.7", o.remote_mta)
                        if o.status == "deferred" else o for o in outcomes]
            outcomes += [Outcome(r.id, "bounced", by_id[r.id].last_error or "delivery time expired", "4.4.7",
                                 by_id[r.id].remote_mta) for r in entry.recipients if r.id not in attempted]
        delay = backoff(entry.attempts, self.qs.retry_initial, self.qs.retry_max, self.rng)
        next_attempt = now + dt.timedelta(seconds=delay)
        held = [r.held_until for r in results if r.held_until is not None]
        if held:
            # Mail behind an open breaker waits for the probe, or for its own retry if that comes first.
            next_attempt = min(held) if not outcomes or min(held) < next_attempt else next_attempt
        notices = self._notices(entry, outcomes, now)
        delay_noticed = any(n.action == "delayed" for n in notices)
        if outcomes and not notices:  # the usual attempt: one statement, no transaction to open
            if not await self.recorder.record(store.Attempt(entry.id, outcomes, now, next_attempt)):
                raise LeaseLost()
            self._log_outcomes(entry, outcomes)
            return
        sign = await self._dsn_signer() if notices else None  # before the transaction: no second connection
        async with self.pool.acquire() as conn, conn.transaction():
            if not await store.record(conn, entry.id, self.owner, outcomes, now, next_attempt,
                                      delay_notified=delay_noticed, counted=bool(outcomes)):
                raise LeaseLost()
            await bounce.send_dsn(conn, sender=entry.sender, notices=notices, original=raw,
                                  reporting_mta=self.settings.server.hostname, now=now, ret=entry.ret,
                                  envid=entry.envid, arrival=entry.created_at,
                                  postmaster=self.settings.server.postmaster, sign=sign)
        self._log_outcomes(entry, outcomes)

    def _log_outcomes(self, entry: QueueEntry, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if self.metrics is not None:
                self.metrics.deliveries.labels(o.status).inc()
            log.info("delivery attempt", extra={"queue_id": entry.id, "recipient_id": o.recipient_id,
                                                "status": o.status, "reply": o.reply})

    def _notices(self, entry: QueueEntry, outcomes: list[Outcome], now: dt.datetime) -> list[bounce.Notice]:
        if not entry.sender:
            return []  # never a DSN to the null sender
        by_id = {r.id: r for r in entry.recipients}
        notices = []
        warn = (self.qs.delay_warning_after > 0 and not entry.delay_notified
                and now >= entry.created_at + dt.timedelta(seconds=self.qs.delay_warning_after))
        until = entry.created_at + dt.timedelta(seconds=self.qs.give_up_after)
        for o in outcomes:
            r = by_id[o.recipient_id]
            if o.status == "bounced" and bounce.wants(r.notify, "failed"):
                notices.append(bounce.Notice(r, "failed", o.status_code, o.reply, o.remote_mta))
            elif o.status == "delivered" and bounce.wants(r.notify, "relayed"):
                # RFC 3464 §2.3.3: handed to the next server, which may or may not report further.
                notices.append(bounce.Notice(r, "relayed", o.status_code, o.reply, o.remote_mta))
            elif o.status == "deferred" and warn and bounce.wants(r.notify, "delayed"):
                notices.append(bounce.Notice(r, "delayed", o.status_code, o.reply, o.remote_mta, until))
        return notices


class QueueService:
    """The queue workers as a `Service` of the server (see `mailserver.app`).

    One claimer leases due entries in batches (one statement for as many entries as there are free
    delivery slots) and runs each in its own task, up to `workers` at once. A single claimer means one
    claim per wake-up instead of one per idle worker (which all woke on each NOTIFY and raced for the same
    entry); the batch means the queue keeps up with a burst instead of taking entries one round trip at
    a time. One heartbeat keeps every lease in flight alive with one statement."""

    name = "queue"

    def __init__(self, outbound: Outbound, workers: int | None = None) -> None:
        self.outbound = outbound
        self.workers = workers or outbound.qs.workers
        self._wake = asyncio.Event()
        self._stopping = False
        self._saturated = False  # the last claim filled every free slot: look again when one frees
        self._claimer: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], int] = {}  # delivery task -> queue id
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._reports_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """LISTEN for new mail, then start claiming (beginning with whatever is due)."""
        listening = asyncio.Event()
        self._listen_task = asyncio.create_task(self._listen(listening), name="queue-listen")
        await asyncio.wait_for(listening.wait(), timeout=30)
        self._claimer = asyncio.create_task(self._claim_loop(), name="queue-claimer")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="queue-heartbeat")

    async def _listen(self, listening: asyncio.Event) -> None:
        """Hold the LISTEN connection; when the database drops it, take another (with backoff) and look
        at the queue at once, since a NOTIFY may have been missed meanwhile. Polling covers the gap."""
        pool = self.outbound.pool
        delay = 0.5
        while not self._stopping:
            try:
                conn = await pool.acquire()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("queue LISTEN connection failed; retrying", extra={"error": repr(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(store.QUEUE_CHANNEL, self._notified)
                self._listener = conn
                delay = 0.5
                if listening.is_set():
                    self._wake.set()
                listening.set()
                await lost.wait()
                log.warning("queue LISTEN connection lost; reconnecting")
            except UNAVAILABLE_ERRORS as exc:
                log.warning("queue LISTEN failed; reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
            finally:
                self._listener = None
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.QUEUE_CHANNEL, self._notified)
                with contextlib.suppress(Exception):
                    await pool.release(conn)

    def _notified(self, *args: object) -> None:
        self._wake.set()

    def wake(self) -> None:
        """Look for due entries now (tests, and `queue retry` in the same process)."""
        self._wake.set()

    async def _claim_loop(self) -> None:
        """Claim as many due entries as there are free slots whenever woken (NOTIFY, a freed slot after a
        full claim, or the poll interval), and start a delivery task for each."""
        ob = self.outbound
        while not self._stopping:
            self._wake.clear()
            free = self.workers - len(self._running)
            entries: list[QueueEntry] = []
            if free > 0:
                try:
                    entries = await ob.claim(free)
                except UNAVAILABLE_ERRORS as exc:  # the database is away: try again after the poll interval
                    log.warning("queue claim failed; retrying after the poll interval", extra={"error": repr(exc)})
                except Exception:  # anything else too: the one claimer must outlive it, or the queue stops
                    log.exception("queue claim failed unexpectedly; retrying after the poll interval")
            # Full: more may be due, so a freed slot wakes us. Not full: nothing else is due until a
            # NOTIFY or the poll interval says so.
            self._saturated = free <= 0 or len(entries) == free
            for entry in entries:
                task = asyncio.create_task(self._run(entry), name=f"queue-entry-{entry.id}")
                self._running[task] = entry.id
                task.add_done_callback(self._finished)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ob.qs.poll_interval):
                    await self._wake.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._saturated:
            self._wake.set()

    async def _run(self, entry: QueueEntry) -> None:
        try:
            await self.outbound.process(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease will expire and the entry be retried; the attempt already counted.
            log.exception("queue entry failed unexpectedly", extra={"queue_id": entry.id})

    async def _heartbeat(self) -> None:
        """Every third of the lease, push out the lease of every entry in flight, in one statement, so a
        slow delivery is not taken over by another worker."""
        ob = self.outbound
        while True:
            await asyncio.sleep(ob.qs.lease_seconds / 3)
            await ob.flush_tls_outcomes()
            if ob.tls_reports.due() and (self._reports_task is None or self._reports_task.done()):
                # its own task: DNS and HTTPS for many domains must not hold up the leases
                self._reports_task = asyncio.create_task(self._send_reports(), name="queue-tls-reports")
            ids = list(self._running.values())
            if not ids:
                continue
            until = ob.clock() + dt.timedelta(seconds=ob.qs.lease_seconds)
            with contextlib.suppress(*UNAVAILABLE_ERRORS, asyncpg.PostgresError):
                await store.extend_leases(ob.pool, ids, ob.owner, until)

    async def _send_reports(self) -> None:
        try:
            await self.outbound.tls_reports.run()
        except Exception:  # the database away or a bug: the next heartbeat tries the day again
            log.exception("TLS reports failed")

    async def stop(self, grace: float) -> None:
        """No new claims; in-flight deliveries get `grace` seconds, then are cancelled and released."""
        self._stopping = True
        self._wake.set()
        if self._claimer is not None:
            await asyncio.gather(self._claimer, return_exceptions=True)
            self._claimer = None
        if self._running:
            _, pending = await asyncio.wait(list(self._running), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.outbound.recorder.idle()  # attempts already handed over are written under our leases
        await self.outbound.flush_tls_outcomes()
        if self._reports_task is not None:
            self._reports_task.cancel()
            await asyncio.gather(self._reports_task, return_exceptions=True)
            self._reports_task = None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        if self.outbound.sessions is not None:
            await self.outbound.sessions.close()
        try:
            released = await store.release(self.outbound.pool, self.outbound.owner)
            if released:
                log.info("queue leases released for retry", extra={"count": released})
        finally:
            if self._listen_task is not None:
                self._listen_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._listen_task
                self._listen_task = None


async def build_services(pool: asyncpg.Pool, settings: Settings, dns: DNSLookup | None,
                         signer: Signer | None = sign_message, metrics: Metrics | None = None) -> list[QueueService]:
    """The queue service for the composition root (signing with `mailcore.auth.dkim` by default)."""
    return [QueueService(Outbound(pool, settings, dns, signer=signer, metrics=metrics,
                                  sessions=client.SessionCache()))]


__all__ = ["DomainResult", "LeaseLost", "Outbound", "QueueService", "Signer", "build_services"]
