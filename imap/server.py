"""The IMAP listeners: the only module of `imap` that touches sockets.

Owns accepting connections on the STARTTLS port (143) and the implicit-TLS port (993), the
per-connection read loop (the RFC 9051 §5.4 inactivity timeout, waiting on the client and on mailbox
changes while a session IDLEs), STARTTLS on the stream, and the process's one `MailboxNotifier`.
`IMAPService` follows the `mailserver.app.Service` shape: `start()` binds (port 0 picks a free port,
`ports` tells which), `stop(grace)` stops accepting and ends sessions.
Must not: parse commands or run SQL (the session and the store do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import asyncpg

from config.settings import ListenerSettings, Settings
from imap import encoder
from imap.session import ServerContext, Session
from mailcore.limits import AuthGuard
from mailcore.metrics import Metrics
from storage.notify import MailboxNotifier

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class StreamTransport:
    """A session's connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: ssl.SSLContext | None, secure: bool) -> None:
        self.reader = reader
        self.writer = writer
        self._tls = tls
        self.secure = secure
        peer = writer.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""

    def write(self, data: bytes | memoryview) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def start_tls(self) -> None:
        assert self._tls is not None
        await self.writer.start_tls(self._tls)
        self.secure = True

    def close(self) -> None:
        self.writer.close()


class IMAPService:
    """IMAP on `settings.imap.imap` (STARTTLS) and, with a TLS context, `settings.imap.imaps`."""

    name = "imap"

    def __init__(self, settings: Settings, pool: asyncpg.Pool, dsn: str, tls: ssl.SSLContext | None, *,
                 auth: AuthGuard | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.notifier = MailboxNotifier(dsn)
        self.ctx = ServerContext(settings, pool, self.notifier, tls, auth=auth, metrics=metrics)
        self.tls = tls
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.notifier.start()
        listeners: list[tuple[str, ListenerSettings, bool]] = [("imap", self.settings.imap.imap, False)]
        if self.tls is not None:
            listeners.append(("imaps", self.settings.imap.imaps, True))
        for label, conf, implicit in listeners:
            if not conf.enabled:
                continue
            server = await asyncio.start_server(
                lambda r, w, implicit=implicit: self._accept(r, w, implicit),
                conf.address, conf.port, ssl=self.tls if implicit else None, limit=READ_SIZE * 2)
            self._servers.append(server)
            self.ports[label] = server.sockets[0].getsockname()[1]
            log.info("imap listening", extra={"listener": label, "address": conf.address,
                                              "port": self.ports[label]})

    async def stop(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in self._servers)), timeout=grace)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=grace or 1)
        await self.notifier.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        transport = StreamTransport(reader, writer, self.tls, implicit)
        session = Session(self.ctx, transport)
        try:
            await serve(session, reader, self.settings.imap.idle_timeout)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # stop(): the listener's own task, so ending quietly is ours to do
            with contextlib.suppress(Exception):
                writer.write(encoder.bye("server shutting down"))
        except Exception:
            log.exception("imap connection failed", extra={"peer": transport.peer_ip})
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await session.close()
                await asyncio.wait_for(writer.wait_closed(), timeout=5)


async def serve(session: Session, reader: asyncio.StreamReader, inactivity: float) -> None:
    """Run one session: read, feed, and during IDLE also wake on mailbox changes."""
    await session.greet()
    read: asyncio.Task[bytes] | None = None
    try:
        while not session.closed:
            if read is None:
                read = asyncio.create_task(reader.read(READ_SIZE))
            wakeup = session.idle_wakeup
            waits: set[asyncio.Future[object]] = {read}  # type: ignore[arg-type]
            if wakeup is not None:
                woke = asyncio.create_task(wakeup.wait())
                waits.add(woke)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(waits, timeout=inactivity, return_when=asyncio.FIRST_COMPLETED)
            if wakeup is not None:
                woke.cancel()
            if not done:
                session.send(encoder.bye("autologout; idle for too long"))  # RFC 9051 §5.4
                return
            if read in done:
                data = read.result()
                read = None
                if not data:
                    return
                await session.feed(data)
            else:
                await session.idle_changed()
    finally:
        if read is not None:
            read.cancel()
