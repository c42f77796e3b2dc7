"""The IMAP listeners: the only module of `imap` that touches sockets.

Owns accepting connections on the STARTTLS port (143) and the implicit-TLS port (993) within the
connection caps (`imap.max_connections`, `imap.max_connections_per_ip`: beyond them the greeting is
BYE [UNAVAILABLE], RFC 9051 §7.1.5; the TLS handshakes on 993 have caps of their own, see
`mailcore.proxygate`), the per-connection read loop (the inactivity timeouts: `imap.login_timeout` before
login, the RFC 9051 §5.4 one after; waiting on the client and on mailbox changes while a session IDLEs),
STARTTLS on the stream, and the process's one `MailboxNotifier`.
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
from imap.dispatch import State
from imap.session import ServerContext, Session
from mailcore.connections import ConnectionSlots
from mailcore.limits import AuthGuard
from mailcore.metrics import Metrics
from mailcore.proxygate import ClientAddress, ProxyGate, TrustedPeers
from storage.notify import MailboxNotifier

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class StreamTransport:
    """A session's connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: ssl.SSLContext | None, secure: bool, client: ClientAddress | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self._tls = tls
        self.secure = secure
        if client is None:
            peer = writer.get_extra_info("peername")
            client = ClientAddress(str(peer[0]), int(peer[1])) if peer else ClientAddress("", 0)
        self.peer_ip = client.ip  # the real client, also behind a balancer (PROXY protocol)
        self.proxied = client.proxied

    def is_closing(self) -> bool:
        return self.writer.is_closing()

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
        self._busy: set[asyncio.Task[None]] = set()  # connections running a command (drained on stop)
        self.trusted = TrustedPeers(settings.server.proxy_protocol_from)
        imap = settings.imap
        self.slots = ConnectionSlots(imap.max_connections, imap.max_connections_per_ip)
        self.handshakes = ConnectionSlots(imap.max_connections, imap.max_connections_per_ip)

    async def start(self) -> None:
        await self.notifier.start()
        listeners: list[tuple[str, ListenerSettings, bool]] = [("imap", self.settings.imap.imap, False)]
        if self.tls is not None:
            listeners.append(("imaps", self.settings.imap.imaps, True))
        for label, conf, implicit in listeners:
            if not conf.enabled:
                continue
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda implicit=implicit, label=label: self._gate(label, implicit),
                                              conf.address, conf.port, reuse_address=True,
                                              reuse_port=self.settings.server.processes > 1 or None)
            self._servers.append(server)
            self.ports[label] = server.sockets[0].getsockname()[1]
            log.info("imap listening", extra={"listener": label, "address": conf.address,
                                              "port": self.ports[label]})

    def bound_ports(self) -> dict[str, int]:
        """The ports bound, by settings path ("imap.imap"), for worker processes to share
        (`server.workers`: each listener is bound with SO_REUSEPORT then)."""
        return {f"imap.{label}": port for label, port in self.ports.items()}

    def _gate(self, label: str, implicit: bool) -> ProxyGate:
        """Every connection passes the PROXY gate first (which also does implicit TLS, after the header)."""
        loop = asyncio.get_running_loop()

        def session(client: ClientAddress) -> asyncio.BaseProtocol:
            reader = asyncio.StreamReader(limit=READ_SIZE * 2, loop=loop)
            return asyncio.StreamReaderProtocol(
                reader, lambda r, w: self._accept(r, w, implicit, client), loop=loop)

        return ProxyGate(session, self.trusted, tls=self.tls if implicit else None,
                         refusal=encoder.bye("PROXY header not accepted from this address"),
                         timeout=self.settings.server.proxy_protocol_timeout, listener=label,
                         handshakes=self.handshakes, handshake_timeout=self.settings.server.tls_handshake_timeout)

    async def stop(self, grace: float) -> None:
        """Stop accepting; sessions in the middle of a command get `grace` seconds to finish it; then
        every session gets BYE and is closed."""
        for server in self._servers:
            server.close()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=grace)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=grace or 1)
        await self.notifier.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit: bool,
                      client: ClientAddress | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        transport = StreamTransport(reader, writer, self.tls, implicit, client)
        if not self.slots.acquire(transport.peer_ip):
            log.warning("imap connection refused: too many connections", extra={"peer": transport.peer_ip})
            with contextlib.suppress(Exception):
                writer.write(encoder.bye("too many connections, try again later", encoder.UNAVAILABLE))
                writer.close()
            return
        self._connections.add(task)
        session = Session(self.ctx, transport)
        try:
            await serve(session, reader, self.settings.imap.idle_timeout, busy=self._busy,
                        login_timeout=self.settings.imap.login_timeout)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # stop(): the listener's own task, so ending quietly is ours to do
            with contextlib.suppress(Exception):
                writer.write(encoder.bye("server shutting down"))
        except Exception:
            log.exception("imap connection failed", extra={"peer": transport.peer_ip})
        finally:
            self.slots.release(transport.peer_ip)
            self._connections.discard(task)
            self._busy.discard(task)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await session.close()
                await asyncio.wait_for(writer.wait_closed(), timeout=5)


async def serve(session: Session, reader: asyncio.StreamReader, inactivity: float,
                busy: set[asyncio.Task[None]] | None = None, login_timeout: float | None = None) -> None:
    """Run one session: read, feed, and during IDLE also wake on mailbox changes. While a command runs,
    the task is in `busy` (so a graceful stop lets it finish). Silence ends the session after
    `inactivity` seconds; before login, `login_timeout` after the connection opened, however much the
    client says meanwhile (a connection nobody logs in on costs a slot; a byte now and then kept it)."""
    task = asyncio.current_task()
    await session.greet()
    read: asyncio.Task[bytes] | None = None
    login_by = None if login_timeout is None else asyncio.get_running_loop().time() + login_timeout
    try:
        while not session.closed:
            quiet = inactivity
            if login_by is not None and session.state is State.NOT_AUTHENTICATED:
                quiet = max(0.0, login_by - asyncio.get_running_loop().time())
            wakeup = session.idle_wakeup
            if wakeup is None and read is None:
                # the common case, a client sending commands: a plain read under a deadline (no task
                # and no wait set per command: they cost more than a small command's own work)
                try:
                    async with asyncio.timeout(quiet):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    session.send(encoder.bye("autologout; idle for too long"))  # RFC 9051 §5.4
                    return
            else:
                if read is None:
                    read = asyncio.create_task(reader.read(READ_SIZE))
                waits: set[asyncio.Future[object]] = {read}  # type: ignore[arg-type]
                if wakeup is not None:
                    woke = asyncio.create_task(wakeup.wait())
                    waits.add(woke)  # type: ignore[arg-type]
                done, _ = await asyncio.wait(waits, timeout=quiet, return_when=asyncio.FIRST_COMPLETED)
                if wakeup is not None:
                    woke.cancel()
                if not done:
                    session.send(encoder.bye("autologout; idle for too long"))  # RFC 9051 §5.4
                    return
                if read not in done:
                    await session.idle_changed()
                    continue
                data = read.result()
                read = None
            if not data:
                return
            if busy is not None and task is not None:
                busy.add(task)
            try:
                await session.feed(data)
            finally:
                if busy is not None and task is not None:
                    busy.discard(task)
    finally:
        if read is not None:
            read.cancel()
