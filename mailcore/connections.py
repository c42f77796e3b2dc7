"""Caps on concurrent connections, overall and per client address: one counter per group of listeners.

Every listener admits a connection only while its group is under both caps (the SMTP listeners share
one group, the IMAP listeners another), so neither a flood from one address nor one from many can hold
more sockets, buffers and tasks than the operator allowed. The implicit-TLS listeners (465, 993) count
the TLS handshake too, in a group of their own (`mailcore.proxygate`): before the handshake ends the
protocol above has not started, so without it a client could hold a socket for the whole handshake
timeout, as often as it liked, counted nowhere.
No protocol lives here: callers turn a refusal into their own reply (SMTP 421, IMAP BYE).
"""

from __future__ import annotations

from collections import Counter


class ConnectionSlots:
    """Open connections of one group of listeners, overall and per client address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        """Admit a connection from `ip` (True: it must be `release`d exactly once) or refuse it (False)."""
        if self.total >= self.max_total or self.per_ip[ip] >= self.max_per_ip:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """Give back a slot `acquire` granted."""
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
