"""A circuit breaker per destination host: stop hammering a host that keeps refusing connections.

Closed: connections allowed; `threshold` consecutive connection-level failures open it. Open: nothing is
tried until `cooldown` has passed (the mail stays queued). Half-open: exactly one probe is let through;
its success closes the breaker, its failure opens it for another cool-down.

State lives in this process (each process learns on its own), keyed by whatever the caller calls a
destination (an MX host name, or a transport's host:port). Time comes from the injected clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from smtp_out.retry import Clock, utc_now


@dataclass
class _State:
    failures: int = 0
    open_until: dt.datetime | None = None
    probing: bool = False


class CircuitBreaker:
    """Per-destination breaker; see the module docstring."""

    def __init__(self, threshold: int, cooldown: float, clock: Clock = utc_now) -> None:
        self.threshold = threshold
        self.cooldown = dt.timedelta(seconds=cooldown)
        self.clock = clock
        self._states: dict[str, _State] = {}

    def state(self, key: str) -> str:
        """'closed', 'open' or 'half-open' (for logs, the CLI and tests)."""
        st = self._states.get(key)
        if st is None or st.open_until is None:
            return "closed"
        return "open" if self.clock() < st.open_until else "half-open"

    def allow(self, key: str) -> bool:
        """Whether a connection to `key` may be tried now. In half-open, True once until the probe ends."""
        st = self._states.get(key)
        if st is None or st.open_until is None:
            return True
        if self.clock() < st.open_until or st.probing:
            return False
        st.probing = True
        return True

    def retry_at(self, key: str) -> dt.datetime | None:
        """When an open breaker will let a probe through (None: not open)."""
        st = self._states.get(key)
        return st.open_until if st is not None else None

    def success(self, key: str) -> None:
        """A connection worked: close the breaker."""
        self._states.pop(key, None)

    def failure(self, key: str) -> None:
        """A connection-level failure: count it, open when the threshold is reached or a probe failed."""
        st = self._states.setdefault(key, _State())
        st.failures += 1
        if st.probing or st.failures >= self.threshold:
            st.open_until = self.clock() + self.cooldown
            st.probing = False

    def abandon(self, key: str) -> None:
        """A probe ended without telling anything (e.g. cancelled): let another probe through."""
        st = self._states.get(key)
        if st is not None:
            st.probing = False
