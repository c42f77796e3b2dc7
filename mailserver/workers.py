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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from typing import Any

from config.settings import Settings
from mailcore.pipeframes import frame, read_frame

log = logging.getLogger("mailserver.workers")

READY = b"ready\n"
START_TIMEOUT = 60.0  # seconds a worker has to bind its listeners (it opens a pool and builds TLS first)
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after successive deaths; reset once a worker lived STABLE
STABLE = 60.0


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
        for task in self._watchers:
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

    def life_line() -> None:  # the primary's end of our stdin closed: it is gone, or wants us gone
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, life_line)

    def ready(_runtime: object) -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        # The primary reads nothing more from this pipe: anything printed later must not fill it and
        # block us, so stdout now goes where the log goes.
        os.dup2(2, 1)

    await run(settings, ready, worker=index, stop=stop)


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
