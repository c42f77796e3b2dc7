"""Running a synchronous library (pyspf, dkimpy) in a worker thread while its DNS goes through our
async `DNSLookup` on the event loop.

The library runs under `asyncio.to_thread`; each of its DNS questions is submitted back to the loop with
`asyncio.run_coroutine_threadsafe` and waited for in the worker thread, with a bound. The loop thread
never waits on the worker, so this cannot deadlock, and neither DNS nor crypto runs on the loop thread.

This module owns that hand-off and nothing else. It must not swap any library's module globals
(pyspf's `DNSLookup`, dkimpy's `get_txt`): each call gets its own bridge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mailcore.dns import DNSTempError

T = TypeVar("T")


class LoopBridge:
    """Lets code in one worker thread await coroutines on the loop that created the bridge."""

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.timeout = timeout
        self.closed = False

    def call(self, make: Callable[[], Awaitable[T]], what: str = "lookup") -> T:
        """Run `make()` on the loop and return its result; called from the worker thread only.

        Raises `DNSTempError` if the bridge was closed (the caller gave up) or the answer did not come
        within the timeout."""
        if self.closed:
            raise DNSTempError(what, "", "lookup abandoned")

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise DNSTempError(what, "", "timeout waiting for the resolver") from exc
        except concurrent.futures.CancelledError as exc:
            raise DNSTempError(what, "", "lookup cancelled") from exc

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """Run `func(*args)` in a worker thread; if we are cancelled, later lookups fail fast."""
        try:
            return await asyncio.to_thread(func, *args)
        finally:
            self.closed = True
