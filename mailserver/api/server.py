"""The HTTP API as a `Service`: uvicorn serving on the server's own event loop, behind the PROXY gate.

Owns the listening socket (bound here, so port 0 works and `port` is known before the first request),
TLS (the runtime's `SSLContext`, shared with the other listeners) and a graceful stop: stop accepting,
let requests in flight finish within the grace period, then cancel. uvicorn's own signal handling is
disabled: the composition root owns SIGTERM/SIGINT.

Every accepted connection passes `mailcore.proxygate.ProxyGate` first, as on SMTP and IMAP: from a
configured load balancer (`server.proxy_protocol_from`) a PROXY v1/v2 header is required, and from anyone
else refused (the connection is closed). TLS is layered by the gate, after the header. To do that, the
listening server is made here rather than by uvicorn: `_Server.startup` replaces uvicorn's (which would
hand `create_server` uvicorn's protocol with `ssl=`) and otherwise keeps uvicorn's `Server` whole, so its
main loop and graceful shutdown are unchanged. The real client reaches the app as the ASGI scope's
`client` and, with whether it was proxied, as `scope[CLIENT_SCOPE_KEY]` (a `ClientAddress`).
uvicorn's `proxy_headers` (X-Forwarded-For) stay off: only the PROXY header is believed.

uvicorn bounds neither the connections nor the time a client takes before its request is in: a client
that connects and says nothing, or sends a header field every few seconds, held its connection (and a
file descriptor the mail listeners share) for ever. `HTTPLimits` adds what a web server has: caps on
connections (overall and per client address, TLS handshakes counted apart, as on SMTP and IMAP), a
deadline for each request head (nginx's client_header_timeout) and one between reads of a body
(client_body_timeout). Idle keep-alive connections between requests remain uvicorn's (5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn

from config.settings import HTTPSettings, ListenerSettings
from mailcore.connections import ConnectionSlots
from mailcore.proxygate import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    ClientAddress,
    ProxyGate,
    TrustedPeers,
)

log = logging.getLogger("mailserver.http")


# The ASGI scope key holding the connection's `ClientAddress` (the `client` tuple cannot say "proxied").
CLIENT_SCOPE_KEY = "mailserver.client"


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_SLOW = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class HTTPLimits:
    """The connection caps and client deadlines of one HTTP listener (see the module text)."""

    connections: ConnectionSlots
    handshakes: ConnectionSlots
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    @classmethod
    def of(cls, settings: HTTPSettings, handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> HTTPLimits:
        return cls(ConnectionSlots(settings.max_connections, settings.max_connections_per_ip),
                   ConnectionSlots(settings.max_connections, settings.max_connections_per_ip),
                   settings.header_timeout, settings.body_timeout, handshake_timeout)


def _with_client(protocol_class: type[asyncio.Protocol], limits: HTTPLimits) -> Any:
    """uvicorn's h11 protocol class, made to report the gate's client instead of the socket's peer, and
    to keep `limits`."""

    class WithClient(protocol_class):  # type: ignore[valid-type,misc]
        def __init__(self, client: ClientAddress, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.client_address = client
            self._admitted = False
            self._head_since: float | None = None  # when the request head now awaited began
            self._last_read = 0.0
            self._watch: asyncio.TimerHandle | None = None
            app = self.app

            async def with_client(scope: Any, receive: Any, send: Any) -> None:
                scope["client"] = (client.ip, client.port)
                scope[CLIENT_SCOPE_KEY] = client
                await app(scope, receive, send)

            self.app = with_client

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.client = (self.client_address.ip, self.client_address.port)  # uvicorn's own logs
            self._admitted = limits.connections.acquire(self.client_address.ip)
            if not self._admitted:
                log.warning("http connection refused: too many connections", extra={"peer": self.client_address.ip})
                transport.write(_BUSY)  # type: ignore[attr-defined]
                transport.close()
                return
            self._head_since = self._last_read = self.loop.time()
            self._arm(limits.header_timeout)

        def data_received(self, data: bytes) -> None:
            self._last_read = self.loop.time()
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:  # a request head on its way: its deadline runs from its first byte
                if self._head_since is None:
                    self._head_since = self._last_read
                    self._arm(limits.header_timeout)
            else:
                self._head_since = None
                if state is h11.SEND_BODY:
                    self._arm(limits.body_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            if self._admitted:
                self._admitted = False
                limits.connections.release(self.client_address.ip)
            super().connection_lost(exc)

        def _arm(self, seconds: float) -> None:
            """Make sure `_check` runs within `seconds` (a later check already set is brought forward)."""
            when = self.loop.time() + seconds
            if self._watch is not None:
                if self._watch.when() <= when:
                    return
                self._watch.cancel()
            self._watch = self.loop.call_at(when, self._check)

        def _check(self) -> None:
            """The deadline of a head or a body read may have passed: if it has, end the connection;
            else look again when it would (one timer per connection, moved only when it fires)."""
            self._watch = None
            if self.transport is None or self.transport.is_closing():
                return
            state, now = self.conn.their_state, self.loop.time()
            if state is h11.IDLE and self._head_since is not None:
                left = self._head_since + limits.header_timeout - now
                if left <= 0:
                    self.transport.write(_SLOW)
                    self.transport.close()
                    return
            elif state is h11.SEND_BODY and not self.flow.read_paused:  # paused: the app is not reading
                left = self._last_read + limits.body_timeout - now
                if left <= 0:
                    log.info("http request body timed out", extra={"peer": self.client_address.ip})
                    self.transport.close()
                    return
            else:
                return  # the request is in (ours to answer) or the connection idles between requests
            self._watch = self.loop.call_later(left, self._check)

    return WithClient


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (they would replace the process's own), listening through the
    PROXY gate (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, trusted: TrustedPeers, tls: ssl.SSLContext | None,
                 proxy_timeout: float, limits: HTTPLimits) -> None:
        super().__init__(config)
        self.trusted = trusted
        self.tls = tls
        self.proxy_timeout = proxy_timeout
        self.limits = limits
        self._gates: weakref.WeakSet[ProxyGate] = weakref.WeakSet()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for given sockets, with `ProxyGate` (and its TLS) in front of the protocol."""
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise RuntimeError("HTTP application startup failed")
        config = self.config
        protocol_class = _with_client(config.http_protocol_class, self.limits)

        def make_inner(client: ClientAddress) -> asyncio.BaseProtocol:
            return protocol_class(client, config=config, server_state=self.server_state,  # type: ignore[no-any-return]
                                  app_state=self.lifespan.state)

        def gate() -> ProxyGate:
            g = ProxyGate(make_inner, self.trusted, tls=self.tls, timeout=self.proxy_timeout, listener="http",
                          handshakes=self.limits.handshakes, handshake_timeout=self.limits.handshake_timeout)
            self._gates.add(g)
            return g

        loop = asyncio.get_running_loop()
        self.servers = [await loop.create_server(gate, sock=sock, backlog=config.backlog) for sock in sockets or []]
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Connections still waiting for their PROXY header are not uvicorn's yet: close them with the listener.
        for g in list(self._gates):
            if g.inner is None and g.transport is not None:
                g.transport.close()
        await super().shutdown(sockets)


def bind(listener: ListenerSettings) -> socket.socket:
    """A listening TCP socket for `listener` (IPv6 when the address is one)."""
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listener.address, listener.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class HttpService:
    """Serve an ASGI app on one listener until stopped."""

    name = "http"

    def __init__(self, app: Any, listener: ListenerSettings, tls: ssl.SSLContext | None,
                 on_stop: Any = None, *, trusted: TrustedPeers | None = None,
                 proxy_timeout: float = DEFAULT_HEADER_TIMEOUT, limits: HTTPLimits | None = None) -> None:
        self.app = app
        self.limits = limits or HTTPLimits.of(HTTPSettings())
        self.listener = listener
        self.tls = tls
        self.trusted = trusted if trusted is not None else TrustedPeers()
        self.proxy_timeout = proxy_timeout
        self.port = 0
        self._on_stop = on_stop
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Bind, start uvicorn and return once it accepts connections."""
        self._sock = bind(self.listener)
        self.port = self._sock.getsockname()[1]
        tls = self.tls
        # TLS is not uvicorn's: the gate layers it after the PROXY header (uvicorn's scope still says https).
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, server_header=False,
                                proxy_headers=False, http="h11")
        self._server = _Server(config, self.trusted, tls, self.proxy_timeout, self.limits)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("HTTP server exited during start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"address": self.listener.address, "port": self.port,
                                          "tls": tls is not None, "proxy_protocol_from": bool(self.trusted)})

    async def stop(self, grace: float) -> None:
        """Stop accepting; give requests in flight `grace` seconds; then cancel what is left."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 1.0)
        except (TimeoutError, SystemExit):
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
        if self._on_stop is not None:
            await self._on_stop()
