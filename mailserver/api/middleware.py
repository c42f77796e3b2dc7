"""ASGI middleware: the request-size cap (413), the latency histogram, and one log line per failure.

The size cap reads the body before the application does and refuses it with a problem document once it
passes `http.max_request_size` (at once when Content-Length says so), so no handler ever buffers more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mailcore.metrics import Metrics
from mailserver.api.problems import PROBLEM_JSON

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Bytes read and discarded after the cap is passed, before the connection is cut.
DRAIN = 1024 * 1024


async def _too_large(send: Send, path: str, limit: int) -> None:
    body = json.dumps({"type": "about:blank", "title": "Content Too Large", "status": 413,
                       "detail": f"request body exceeds {limit} bytes", "instance": path}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 (RFC 9110 §15.5.14)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self.limit + DRAIN:
            await _too_large(send, scope.get("path", ""), self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            more = bool(message.get("more_body"))
            size += len(chunk)
            if size > self.limit or declared > self.limit:
                # Read (and drop) a bounded amount more, so a client still sending sees the 413 rather
                # than a reset connection; past DRAIN it is simply cut off.
                if size > self.limit + DRAIN:
                    break
                chunks = []
                continue
            chunks.append(chunk)
        if size > self.limit or declared > self.limit:
            await _too_large(send, scope.get("path", ""), self.limit)
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Timing:
    """Observe each request's duration by method, route template (never the raw path) and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_request_duration.labels(scope["method"], template, f"{status // 100}xx").observe(
                time.perf_counter() - started)


class AnsweredErrors:
    """End a request quietly when the application has already answered its exception.

    Starlette hands an unexpected exception to `problems`' handler, which logs it and sends the 500,
    and then raises it again "for the server": uvicorn logged the same traceback a second time, as
    "Exception in ASGI application". Once the response has started the exception is swallowed here (a
    response cut short by it is still cut: uvicorn closes a connection whose response did not
    complete); one raised before any response goes on to uvicorn, the only one left to report it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not started:
                raise
