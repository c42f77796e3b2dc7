"""Change notifications from PostgreSQL: one LISTEN connection per channel and process, kept open.

`ChannelListener` owns such a connection (PostgreSQL delivers a NOTIFY only at commit, from any process
on the database): it reopens it with backoff when it drops and says when it is up and when it went down,
since a notification sent meanwhile is lost and whoever trusts the channel must know.
`MailboxNotifier` is the one for `mailbox_changes`, with the table of who waits on which mailbox: a
subscriber holds an `asyncio.Event` that is set when its mailbox may have changed; it then asks the store
what changed; after a reconnect every subscriber is woken. Must not: know what changed, or any protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from storage.delivery import MAILBOX_CHANNEL

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds


class ChannelListener:
    """LISTEN on `channel` for as long as it runs; `on_notify(payload)` for each notification.

    `on_up` runs each time the LISTEN is in place (the first time and after each reconnect), `on_down`
    as soon as the connection is known to be lost. A connection that stops answering (a peer gone without
    a reset, which no read would notice) is found by a `SELECT 1` every `ping_interval` seconds and
    counts as lost, so `up` is not left true on a dead connection. Any failure to connect (a refusal, or
    no answer within CONNECT_TIMEOUT) is retried: a listener that gave up would leave its users deaf."""

    def __init__(self, dsn: str, channel: str, on_notify: Callable[[str], None], *, name: str,
                 on_up: Callable[[], None] | None = None, on_down: Callable[[], None] | None = None,
                 reconnect_delay: float = 1.0, ping_interval: float = 10.0) -> None:
        self.dsn = dsn
        self.channel = channel
        self.name = name
        self.reconnect_delay = reconnect_delay
        self.ping_interval = ping_interval
        self._on_notify = on_notify
        self._on_up = on_up
        self._on_down = on_down
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()

    @property
    def up(self) -> bool:
        """Whether the LISTEN is in place now (no notification can be missed while it is)."""
        return self._up.is_set()

    def start(self) -> None:
        """Start listening in the background (`wait_up` for when it is)."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def wait_up(self) -> None:
        """Until the LISTEN is in place."""
        await self._up.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _deliver(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def _run(self) -> None:
        delay = self.reconnect_delay
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": f"mailserver-{self.name}"})
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notify connection failed; retrying",
                            extra={"channel": self.channel, "error": str(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._deliver)
                delay = self.reconnect_delay
                self._up.set()
                if self._on_up is not None:
                    self._on_up()
                await self._hold(conn, lost)
                log.warning("notify connection lost; reconnecting", extra={"channel": self.channel})
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notify connection failed; retrying", extra={"channel": self.channel, "error": str(exc)})
                await asyncio.sleep(delay)
            finally:
                self._went_down()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=5)

    async def _hold(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is lost, or stops answering a ping."""
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), timeout=self.ping_interval)
            except TimeoutError:
                try:
                    await conn.fetchval("SELECT 1", timeout=self.ping_interval)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    return

    def _went_down(self) -> None:
        if self._up.is_set():
            self._up.clear()
            if self._on_down is not None:
                self._on_down()


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
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._listened = False
        self._listener = ChannelListener(dsn, MAILBOX_CHANNEL, self._on_notify, name="notify",
                                         on_up=self._on_up, reconnect_delay=reconnect_delay)

    async def start(self) -> None:
        """Connect and LISTEN; return once listening."""
        self._listener.start()
        await asyncio.wait_for(self._listener.wait_up(), timeout=30)

    async def stop(self) -> None:
        await self._listener.stop()

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

    def _on_up(self) -> None:
        if self._listened:
            self._wake_all()  # we may have missed notifications while reconnecting
        self._listened = True

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.event.set()

    def _on_notify(self, payload: str) -> None:
        try:
            mailbox_id = int(payload)
        except ValueError:
            return
        self.publish(mailbox_id)
