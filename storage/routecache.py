"""The in-process cache of recipient routing, so that a RCPT is usually answered from memory (issue 8:
Postfix answers RCPT from in-memory tables; we paid a PostgreSQL round trip for each).

Owns: a bounded LRU of `accounts.Routing` answers (known recipients, and apart from them, so that a
dictionary attack cannot push them out, unknown addresses at our domains and domains not ours), and the
`LISTEN routing_changes` connection that empties it. Migration 0011's triggers notify on every change to
domains, accounts or aliases that could alter an answer, from any instance or any SQL client.

Correctness rules, each of which a stale answer would break:
- the cache is used only while the LISTEN is in place: not before the first connect, and not from the
  moment the connection is known lost until it is back (and it is emptied on both edges);
- an answer read from the database is stored only if no notification (nor a reconnect) came while it
  was read: the read may have seen the tables before the change that notified;
- how full an account is is never cached: an answer whose accounts have a quota asks the database for
  their `used_bytes` each time (one cheap query); without a quota there is no round trip at all.
Must not: know any protocol or reply; route postmaster (it depends on the configuration).
"""

from __future__ import annotations

from collections import OrderedDict

from mailcore.address import Address
from storage import accounts
from storage.accounts import Conn, Routing
from storage.notify import ChannelListener

ROUTING_CHANNEL = "routing_changes"  # migration 0011
CAPACITY = 10_000


class _LRU:
    """At most `capacity` answers; the least recently used goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, Routing] = OrderedDict()

    def get(self, key: str) -> Routing | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: str, routing: Routing) -> None:
        self.entries[key] = routing
        self.entries.move_to_end(key)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


class RouteCache:
    """One per process, shared by every listener. `start()` it, then `route()` as `accounts.route_address`.

    Also a server service (name, start, stop), started before the SMTP listeners and stopped after them.
    Until the LISTEN is in place every `route()` goes to the database, so `start` need not wait for it."""

    name = "route-cache"

    def __init__(self, dsn: str, *, capacity: int = CAPACITY, reconnect_delay: float = 1.0,
                 ping_interval: float = 10.0) -> None:
        self._known = _LRU(capacity)
        self._unknown = _LRU(capacity)  # no such address at our domain ("local@domain"), not ours ("@domain")
        self._generation = 0  # grows with every emptying; an answer read across one is not stored
        self.hits = 0
        self.misses = 0
        self._listener = ChannelListener(dsn, ROUTING_CHANNEL, self._on_notify, name="routes",
                                         on_up=self._forget, on_down=self._forget,
                                         reconnect_delay=reconnect_delay, ping_interval=ping_interval)

    @property
    def listening(self) -> bool:
        """Whether answers are being cached now (the LISTEN is in place)."""
        return self._listener.up

    @property
    def generation(self) -> int:
        """How many times the cache was emptied (by a notification, or its connection going or coming)."""
        return self._generation

    def __len__(self) -> int:
        return len(self._known.entries) + len(self._unknown.entries)

    async def start(self) -> None:
        """Begin listening in the background; the cache is bypassed until it is (`wait_listening`)."""
        self._listener.start()

    async def wait_listening(self) -> None:
        await self._listener.wait_up()

    async def stop(self, grace: float = 0.0) -> None:
        await self._listener.stop()
        self._forget()

    async def route(self, conn: Conn, address: Address, incoming: int = 0) -> tuple[Routing, list[int]]:
        """`accounts.route_address`, from memory when the answer is known: its routing and which of its
        local accounts are full or would be by `incoming` more bytes."""
        generation = self._generation if self.listening else None
        cached = self._get(address) if generation is not None else None
        if cached is not None:
            self.hits += 1
            return cached, await accounts.accounts_over_quota(conn, list(cached.quota_ids), incoming)
        self.misses += 1
        routing, full = await accounts.route_address(conn, address, incoming)
        if generation is not None and generation == self._generation and self.listening:
            self._put(address, routing)
        return routing, full

    def _get(self, address: Address) -> Routing | None:
        return (self._known.get(address.key) or self._unknown.get(address.key)
                or self._unknown.get("@" + address.domain))

    def _put(self, address: Address, routing: Routing) -> None:
        if not routing.ours:
            self._unknown.put("@" + address.domain, routing)  # the answer is the domain's, for any local part
        elif routing.local or routing.remote:
            self._known.put(address.key, routing)
        else:
            self._unknown.put(address.key, routing)

    def _forget(self) -> None:
        """Drop every answer, and any being read now."""
        self._generation += 1
        self._known.entries.clear()
        self._unknown.entries.clear()

    def _on_notify(self, payload: str) -> None:
        self._forget()
