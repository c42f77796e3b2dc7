"""The HTTP API as a `Service`: uvicorn serving on the server's own event loop.

Owns the listening socket (bound here, so port 0 works and `port` is known before the first request),
TLS (the runtime's `SSLContext`, shared with the other listeners) and a graceful stop: stop accepting,
let requests in flight finish within the grace period, then cancel. uvicorn's own signal handling is
disabled: the composition root owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from config.settings import ListenerSettings

log = logging.getLogger("mailserver.http")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (they would replace the process's own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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
                 on_stop: Any = None) -> None:
        self.app = app
        self.listener = listener
        self.tls = tls
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
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, server_header=False,
            proxy_headers=False, ssl_context_factory=(lambda _config, _default: tls) if tls else None,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("HTTP server exited during start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"address": self.listener.address, "port": self.port,
                                          "tls": tls is not None})

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
