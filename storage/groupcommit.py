"""Group commit: writes that arrive while a commit is running share the next one.

Each accepted message must be durable before its 250 (synchronous_commit on), and a commit per message
costs PostgreSQL a transaction, a WAL flush, a statement's executor start-up and a row lock held across
the flush; and the event loop a pool acquire and a round trip. Under concurrent load (fifty SMTP
connections) most of that is the same work done fifty times. Here, payloads (a message to store) queue
up while up to `PARALLEL` commits are in flight and go out together: the caller's `run` stores the whole
batch in one transaction (`storage.delivery` does it in ONE statement), and only once that is durable
does each caller get its result (and so its 250).

Nothing waits on a timer: the first delivery after an idle moment is committed at once, alone, so one
connection's latency is that of a single-message commit. Batches form only while the database is
busy, which is exactly when sharing its work pays.

A batch that fails as a whole (bad data in one message, a deadlock) is retried one payload at a time, so
one message cannot fail another; a database that is down fails them all, as it would have each alone.

A group (one pool, one `run`) exists only while it has work: it is made by the first payload of a
burst and dropped when its queue drains, so a closed pool leaves nothing behind. Must not: know SQL,
SMTP or what a payload holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from storage.db import is_unavailable

log = logging.getLogger(__name__)

# Commits in flight per pool: one keeps PostgreSQL busy on one core while the other prepares the next
# batch; two let PostgreSQL overlap one batch's WAL flush with the next batch's work.
PARALLEL = 2
# One statement's share of the queue: bounds its parameters (and the memory PostgreSQL and asyncpg
# hold for them) and the time a row lock is held. The statement keeps the batch's rows in a tuplestore,
# which spills to a temporary file beyond work_mem (4 MB by default): the byte bound stays under it.
MAX_MESSAGES = 64
MAX_BYTES = 4 * 1024 * 1024


Payload = TypeVar("Payload")
Result = TypeVar("Result")
# Commits a batch of payloads on a pool in one transaction and returns their results, in order, or raises.
Runner = Callable[[asyncpg.Pool, list[Any]], Awaitable[list[Any]]]


@dataclass
class _Pending:
    """One payload waiting for a commit, with the future its caller awaits."""

    payload: Any
    size: int
    future: asyncio.Future[Any]


class _Group:
    """The queue of one pool and the commits draining it."""

    def __init__(self, pool: asyncpg.Pool, run: Runner) -> None:
        self.pool = pool
        self.run = run
        self.key = (pool, run)
        self.queue: list[_Pending] = []
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, item: _Pending) -> None:
        self.queue.append(item)
        if self.running < PARALLEL:
            self._start()

    def _start(self) -> None:
        self.running += 1
        task = asyncio.get_running_loop().create_task(self._drain())
        self.tasks.add(task)
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        """A drain ended (its done callback: it runs even for a task cancelled before it started).
        Payloads queued since its last look get a new drain; if it was cancelled (the loop shutting
        down) and no other drain is left, nothing will commit them, so their callers are cancelled
        rather than left waiting. A group with nothing left to do is dropped."""
        self.tasks.discard(task)
        self.running -= 1
        if self.queue and not task.cancelled():
            self._start()
            return
        if not self.running:
            for item in self.queue:
                item.future.cancel()
            self.queue.clear()
            if _groups.get(self.key) is self:
                del _groups[self.key]

    def _take(self) -> list[_Pending]:
        """The next batch: the oldest waiting payloads, up to the count and byte bounds (at least one)."""
        batch: list[_Pending] = []
        size = 0
        while self.queue and len(batch) < MAX_MESSAGES:
            item = self.queue[0]
            if batch and size + item.size > MAX_BYTES:
                break
            batch.append(self.queue.pop(0))
            size += item.size
        return batch

    async def _drain(self) -> None:
        while self.queue:
            await self._commit(self._take())

    async def _commit(self, batch: list[_Pending]) -> None:
        """Commit `batch` as one call and hand each caller its result; on failure, one by one."""
        try:
            results = await self.run(self.pool, [item.payload for item in batch])
        except BaseException as exc:
            if len(batch) == 1 or is_unavailable(exc) or not isinstance(exc, Exception):
                for item in batch:
                    _settle(item, exc=exc)
                if not isinstance(exc, Exception):
                    raise
                return
            log.warning("group commit of %d payloads failed, committing them one by one: %s",
                        len(batch), exc)
            for item in batch:
                await self._commit([item])
            return
        for item, result in zip(batch, results, strict=True):
            _settle(item, result=result)


def _settle(item: _Pending, *, result: Any = None, exc: BaseException | None = None) -> None:
    """Complete a caller's future unless it has gone (its session was cancelled meanwhile). A commit
    cancelled under it (shutdown) cancels the caller too: whether it committed is unknown, so no 250."""
    if item.future.done():
        return
    if isinstance(exc, Exception):
        item.future.set_exception(exc)
    elif exc is not None:
        item.future.cancel()
    else:
        item.future.set_result(result)


_groups: dict[tuple[asyncpg.Pool, Runner], _Group] = {}


async def commit(pool: asyncpg.Pool, payload: Payload, size: int,
                 run: Callable[[asyncpg.Pool, list[Payload]], Awaitable[list[Result]]]) -> Result:
    """Queue `payload` (of `size` bytes) for the pool's next group commit; return its result once the
    commit holding it is durable. `run` commits a batch of payloads in one transaction and returns
    their results in order. Payloads of one pool and one `run` share commits."""
    group = _groups.get((pool, run))
    if group is None:
        group = _groups[(pool, run)] = _Group(pool, run)
    item = _Pending(payload, size, asyncio.get_running_loop().create_future())
    group.add(item)
    return await item.future
