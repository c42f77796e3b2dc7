"""A TCP forwarder on loopback that a test can break the way networks break: `cut` (every connection
reset, new ones refused), `freeze` (connections stay open but nothing passes: a peer gone without a
reset) and `open` again. For the states of a long-lived database connection that a real server only
reaches by accident."""

from __future__ import annotations

import asyncio
import contextlib


class TcpGate:
    """Forward 127.0.0.1:`port` to `host`:`target_port`, or to the Unix socket `unix_path` when given
    (the embedded PostgreSQL listens on one only). `await start()`, then `await close()`."""

    def __init__(self, host: str, target_port: int, unix_path: str | None = None) -> None:
        self.host = host
        self.target_port = target_port
        self.unix_path = unix_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpGate:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        """Reset every connection, and every new one until `open`."""
        self._refusing = True
        for writer in list(self._writers):
            writer.transport.abort()

    def freeze(self) -> None:
        """Keep the connections but pass nothing either way until `open`."""
        self._flowing.clear()

    def open(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            if self.unix_path is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            self._writers.difference_update((writer, up_writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
