"""Mailbox change notifications: one LISTEN connection per process, fanned out to subscribers.

Owns the `LISTEN mailbox_changes` connection (PostgreSQL delivers a NOTIFY only at commit, from any
process on the database) and the table of who waits on which mailbox. A subscriber holds an
`asyncio.Event` that is set when its mailbox may have changed; it then asks the store what changed.
If the connection drops, it is reopened with backoff and every subscriber is woken (a notification
may have been missed). Must not: know what changed, or any protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import asyncpg

from storage.delivery import MAILBOX_CHANNEL

log = logging.getLogger(__name__)


class Subscription:
    """A wait on one mailbox: `event` is set on a change; clear it before asking the store."""

    def __init__(self, notifier: MailboxNotifier, mailbox_id: int) -> None:
        self.notifier = notifier
        self.mailbox_id = mailbox_id
        self.event = asyncio.Event()

    def close(self) -> None:
        self.notifier._remove(self)


class MailboxNotifier:
    """Start once per process; sessions `subscribe(mailbox_id)` and `close()` their subscriptions."""

    def __init__(self, dsn: str, *, reconnect_delay: float = 1.0) -> None:
        self.dsn = dsn
        self.reconnect_delay = reconnect_delay
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Connect and LISTEN; return once listening."""
        self._task = asyncio.create_task(self._run(), name="mailbox-notifier")
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, mailbox_id: int) -> Subscription:
        sub = Subscription(self, mailbox_id)
        self._subs[mailbox_id].add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.mailbox_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.mailbox_id]

    def publish(self, mailbox_id: int) -> None:
        """Wake this process's subscribers of `mailbox_id` (also done for every NOTIFY received)."""
        for sub in self._subs.get(mailbox_id, ()):
            sub.event.set()

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.event.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            mailbox_id = int(payload)
        except ValueError:
            return
        self.publish(mailbox_id)

    async def _run(self) -> None:
        delay = self.reconnect_delay
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "mailserver-notify"})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("notify connection failed; retrying", extra={"error": str(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(MAILBOX_CHANNEL, self._on_notify)
                self._conn = conn
                delay = self.reconnect_delay
                if self._ready.is_set():
                    self._wake_all()  # we may have missed notifications while reconnecting
                self._ready.set()
                await lost.wait()
                log.warning("notify connection lost; reconnecting")
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=5)
