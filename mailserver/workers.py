"""Worker processes (`server.workers`): the SMTP and IMAP listeners in several processes on the same ports.

Why: one Python process serves its connections on one core (the GIL); under load from many connections
it is the bottleneck while the machine's other cores idle. With `workers = N` the process started by
`mailserver serve` (the primary) starts N-1 workers; each binds the same addresses with SO_REUSEPORT and
the kernel spreads new connections over them, as Postfix's master spreads them over many smtpd. The
primary alone runs what there must be one of per process group: the embedded PostgreSQL, migrations, the
outbound queue, the search indexer and the HTTP API. Workers reach it only through PostgreSQL, exactly as
separate instances on one database do (NOTIFY wakes IDLE sessions and the queue in any process).

A worker is `python -m mailserver.workers`. It reads its settings from its stdin (one length-prefixed
pickle: the primary's settings with the database address and the ports the primary actually bound, so a
configured port 0 and the embedded database work too), says `ready` on stdout once its listeners are
bound, and then holds stdin as its life line: end of file (the primary ended, even by SIGKILL) stops it
gracefully, as SIGTERM does. The primary restarts a worker that dies, with a growing delay.
After `ready` the same pipes carry the primary's requests for the worker's metrics (frames of
mailcore.pipeframes both ways), so that the primary's `/metrics` counts every process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from config.settings import Settings
from mailcore.pipeframes import FrameError, frame, read_frame, receive_frame

if TYPE_CHECKING:
    from mailserver.app import Runtime

log = logging.getLogger("mailserver.workers")

READY = b"ready\n"
START_TIMEOUT = 60.0  # seconds a worker has to bind its listeners (it opens a pool and builds TLS first)
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after successive deaths; reset once a worker lived STABLE
STABLE = 60.0
METRICS_TIMEOUT = 2.0  # seconds a worker has to send its metrics to a scrape


class WorkerFailed(RuntimeError):
    """A worker process ended before it said it was ready (its log, on the shared stderr, says why)."""


def worker_count(settings: Settings) -> int:
    """The processes serving connections: `server.workers`, or one per CPU when it is 0."""
    return settings.server.processes


def pin(settings: Settings, dsn: str, ports: dict[str, int]) -> Settings:
    """The settings a worker runs with: the primary's, with the database the primary is connected to (the
    embedded server's address included) and each listener's port as bound (`"smtp.mx": 2525`), so that
    all processes share the same ports even where the configuration says 0."""
    sections: dict[str, Any] = {}
    for path, port in ports.items():
        section, name = path.split(".")
        current = sections.get(section, getattr(settings, section))
        sections[section] = dataclasses.replace(current, **{name: dataclasses.replace(getattr(current, name),
                                                                                      port=port)})
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, dsn=dsn), **sections)


class WorkerPool:
    """The primary's side: start the workers, restart any that dies, stop them on shutdown (a `Service`)."""

    name = "workers"

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        # per worker, the metrics requests sent and not yet answered, in order: the worker answers in
        # that order, so a reply that comes after its scrape gave up is matched and dropped, never taken
        # for the answer to a later request
        self._waiting: dict[int, collections.deque[asyncio.Future[bytes]]] = {}
        self._readers: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Start every worker and return once all have bound their listeners; fail if one cannot."""
        try:
            await asyncio.gather(*(self._spawn(index) for index in range(1, self.count)))
        except BaseException:
            await self.stop(0)
            raise
        self._watchers = [asyncio.create_task(self._watch(index), name=f"worker-{index}")
                          for index in range(1, self.count)]
        log.info("worker processes started", extra={"workers": self.count - 1,
                                                    "pids": ",".join(str(p.pid) for p in self.procs.values())})

    async def _spawn(self, index: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailserver.workers", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        self.procs[index] = proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame((self.settings, index)))
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except (OSError, TimeoutError):
            line = b""
        if line != READY:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise WorkerFailed(f"worker process {index} did not start (exit {proc.returncode})")
        waiting = self._waiting[index] = collections.deque()
        self._readers[index] = asyncio.create_task(self._replies(index, proc.stdout, waiting),
                                                   name=f"worker-{index}-replies")

    async def _replies(self, index: int, stdout: asyncio.StreamReader,
                       waiting: collections.deque[asyncio.Future[bytes]]) -> None:
        """Hand each reply a worker sends to the oldest request waiting for one, until its pipe ends (or
        carries something that is not a frame: then the stream cannot be trusted to stay in step, and the
        worker's figures are left out of scrapes until it is restarted)."""
        try:
            while True:
                reply = await receive_frame(stdout)
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(reply)
        except EOFError as exc:
            if isinstance(exc, FrameError):
                log.error("worker reply pipe unreadable", extra={"worker": index, "error": str(exc)})
            if self._waiting.get(index) is waiting:  # not asked again until a restart gives it a new pipe
                del self._waiting[index]
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(EOFError("worker ended"))

    async def expositions(self) -> list[bytes]:
        """Every running worker's metrics as Prometheus text (a `Metrics.sources` entry), asked of all at
        once. A worker that does not answer within METRICS_TIMEOUT is left out of this scrape (logged)."""
        loop = asyncio.get_running_loop()
        asked: dict[int, asyncio.Future[bytes]] = {}
        for index, proc in list(self.procs.items()):
            if proc.returncode is not None or proc.stdin is None or index not in self._waiting:
                continue
            try:
                proc.stdin.write(frame("metrics"))
            except OSError:  # it is ending
                continue
            future: asyncio.Future[bytes] = loop.create_future()
            self._waiting[index].append(future)  # no await since the write: its reply cannot come first
            asked[index] = future
        if not asked:
            return []
        await asyncio.wait(asked.values(), timeout=METRICS_TIMEOUT)
        out = []
        for index, future in asked.items():
            if future.done() and future.exception() is None:
                out.append(future.result())
            else:
                future.cancel()
                log.warning("worker metrics unavailable", extra={"worker": index})
        return out

    async def _watch(self, index: int) -> None:
        """Wait for the worker to end; unless the server is stopping, start another after a delay that
        grows while it keeps dying (a broken worker must not spin)."""
        deaths = 0
        while True:
            started = time.monotonic()
            code = await self.procs[index].wait()
            if self._stopping:
                return
            deaths = 1 if time.monotonic() - started > STABLE else deaths + 1
            delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS)) - 1]
            log.error("worker process ended; starting another", extra={"worker": index, "exit": code,
                                                                       "delay": delay})
            await asyncio.sleep(delay)
            try:
                await self._spawn(index)
            except (WorkerFailed, OSError) as exc:
                log.error("worker process restart failed", extra={"worker": index, "error": str(exc)})
                continue
            self.restarts += 1
            log.info("worker process restarted", extra={"worker": index, "pid": self.procs[index].pid})

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (each stops like a server: in-flight work gets `grace` seconds), wait for
        them a little longer than that, then SIGKILL what is left."""
        self._stopping = True
        for task in [*self._watchers, *self._readers.values()]:
            task.cancel()
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        waits = [proc.wait() for proc in self.procs.values() if proc.returncode is None]
        if waits:
            _, late = await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=grace + 5)
            if late:
                log.warning("worker processes killed at shutdown", extra={"workers": len(late)})
                for proc in self.procs.values():
                    if proc.returncode is None:
                        proc.kill()
                await asyncio.wait(late, timeout=5)
        for proc in self.procs.values():
            if proc.stdin is not None:
                proc.stdin.close()


def _read_start() -> tuple[Settings, int]:
    """The frame the primary writes first: (settings, worker index)."""
    try:
        settings, index = read_frame(sys.stdin.buffer)
    except EOFError:
        raise SystemExit("mailserver.workers: no start frame on stdin (this module is started by serve)") from None
    return settings, index


class _Tag(logging.Filter):
    """Mark every log line of a worker with its index, so the one shared stderr says who spoke."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


async def _serve(settings: Settings, index: int) -> None:
    from mailserver.app import run

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    requests = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    answers = _Answers()

    def ready(runtime: Runtime) -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        # Replies to the primary go to a private copy of stdout; fd 1 goes where the log goes, so that a
        # stray print can neither corrupt a reply nor fill a pipe nobody reads.
        answers.out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        answers.runtime = runtime

    serving = asyncio.create_task(_serve_requests(requests, answers, stop))
    try:
        await run(settings, ready, worker=index, stop=stop)
    finally:
        serving.cancel()
        if answers.transport is not None:
            answers.transport.close()


@dataclasses.dataclass
class _Answers:
    """What a worker answers the primary's requests with, once it is ready."""

    runtime: Runtime | None = None
    out: BinaryIO | None = None
    transport: asyncio.WriteTransport | None = None


async def _serve_requests(requests: asyncio.StreamReader, answers: _Answers, stop: asyncio.Event) -> None:
    """Stdin after the start frame: the primary's requests ("metrics"), and its end of file, which says the
    primary is gone or wants this worker gone (then the worker stops, as on SIGTERM). Anything on the pipe
    that is not a frame stops the worker too: this loop is what notices the primary's end, and a worker
    that kept serving without it could outlive its primary, holding the ports."""
    while True:
        try:
            request = await receive_frame(requests)
        except EOFError as exc:
            if isinstance(exc, FrameError):
                log.error("request pipe from the primary unreadable; stopping", extra={"error": str(exc)})
            stop.set()
            return
        if request != "metrics" or answers.runtime is None:
            continue  # the primary asks only once the worker said ready (`out` is set with `runtime`)
        if answers.transport is None:  # a non-blocking writer: the loop never waits on the pipe
            answers.transport, _ = await asyncio.get_running_loop().connect_write_pipe(asyncio.Protocol,
                                                                                       answers.out)
        answers.transport.write(frame(answers.runtime.metrics.render()[0]))


def main() -> int:
    """Run one worker until SIGTERM, SIGINT or the end of stdin."""
    from mailserver.app import loop_factory
    from mailserver.logs import setup_logging

    settings, index = _read_start()
    setup_logging(settings.server.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag(index))
    with asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner:
        runner.run(_serve(settings, index))
    return 0


if __name__ == "__main__":
    sys.exit(main())
