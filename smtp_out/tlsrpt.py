"""TLS outcomes of outbound sessions, per recipient domain, for TLS-RPT (RFC 8460): counted in memory as
sessions happen and added to the `tls_outcomes` table now and then (`flush`), so a delivery costs no
extra statement. Only sessions to a domain's MX hosts count (a smarthost is not the domain's); the
policy type is "sts" when the domain's MTA-STS policy made TLS required, else "no-policy-found" (a
domain in `queue.require_tls` is our own rule, not a published policy). DANE is not implemented, so
"tlsa" never occurs. Opportunistic sessions do not verify certificates (RFC 7435), so they come to
success, starttls-not-supported or validation-failure only; certificate result types come from
verified sessions. Building and sending the reports is `smtp_out.tlsreports`'s.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from smtp_out.client import TLSOutcomeSink, TLSResult
from smtp_out.retry import Clock
from smtp_out.routing import Hop
from storage import tlsoutcomes
from storage.tlsoutcomes import OutcomeKey

log = logging.getLogger(__name__)

# Counts kept while the database cannot take them: past this many distinct rows, new ones are dropped
# (reports are statistics; memory is not given up for them).
MAX_PENDING = 100_000


class TLSOutcomes:
    """Counts of one process, waiting for `flush`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._counts: dict[OutcomeKey, tuple[int, str]] = {}

    def recorder(self, domain: str, hop: Hop, address: str) -> TLSOutcomeSink | None:
        """What `client.deliver` tells each session's outcome to, for `domain` at `hop`/`address`."""
        if hop.via_transport:
            return None

        def record(result: TLSResult, detail: str) -> None:
            day = self.clock().astimezone(dt.UTC).date()
            key = OutcomeKey(day, domain.lower(), "sts" if hop.sts else "no-policy-found", result,
                             hop.name.lower(), address)
            sessions, latest = self._counts.get(key, (0, ""))
            if sessions or len(self._counts) < MAX_PENDING:
                self._counts[key] = (sessions + 1, detail or latest)

        return record

    async def flush(self, pool: asyncpg.Pool) -> None:
        """Add what was counted since the last flush to the table; kept for the next one on failure."""
        counts, self._counts = self._counts, {}
        try:
            await tlsoutcomes.add(pool, counts)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("TLS outcomes not written; kept for the next try", extra={"error": repr(exc)})
            for key, (sessions, detail) in counts.items():
                later, latest = self._counts.get(key, (0, ""))
                self._counts[key] = (sessions + later, latest or detail)
