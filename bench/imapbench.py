"""IMAP workloads for the benchmark, over a minimal asyncio IMAP client.

The client reads responses in large chunks and finds the tagged completion with one memory search
(tags are unlikely strings, `BQ0001`, and the bench's messages never contain them), counting FETCH
responses as it goes: the client must stay cheap next to the servers it measures, even for a
100,000-message header sync. Commands are those Thunderbird sends.

Workloads (each returns seconds, and what it checked):
  select        SELECT INBOX
  header_sync   Thunderbird's first-sync UID FETCH 1:* of sizes, flags and the list of header fields
  body_fetch    100 UID FETCH BODY.PEEK[] of random messages, one after another
  search_header UID SEARCH SUBJECT (a word in 1 subject of 20)
  search_body   UID SEARCH BODY (a word in 1 body of 50)
  append        single-message APPENDs, one after another
and `concurrent(k, ...)`: the same command from k logged-in clients at once, time until all finish.

    python bench/imapbench.py --port 10143 --user box1000@bench.test --password benchpass
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from messages import BODY_NEEDLE, SUBJECT_NEEDLE, make_message  # noqa: E402

HEADER_SYNC = (b"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
               b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
_FETCH = b" FETCH ("


class IMAPError(Exception):
    pass


class Response:
    """A completed command: the tagged status line, the untagged bytes (if kept) and counts."""

    def __init__(self, status: bytes, data: bytes, fetches: int, nbytes: int) -> None:
        self.status, self.data, self.fetches, self.nbytes = status, data, fetches, nbytes

    @property
    def ok(self) -> bool:
        return self.status.split(b" ", 2)[1:2] == [b"OK"]


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pending = b""
        self.n = 0
        self.caps: set[bytes] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, user: str | None = None, password: str | None = None) -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        c = cls(reader, writer)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise IMAPError(f"greeting {greeting[:80]!r}")
        if user is not None:
            r = await c.command(f'LOGIN "{user}" "{password}"'.encode())
            if not r.ok:
                raise IMAPError(f"LOGIN {r.status[:120]!r}")
        return c

    async def close(self) -> None:
        try:
            self.writer.write(b"BQZ LOGOUT\r\n")
            await asyncio.wait_for(self.writer.drain(), 2)
        except (OSError, TimeoutError):
            pass
        self.writer.close()

    def _tag(self) -> bytes:
        self.n += 1
        return b"BQ%04d" % self.n

    async def _read(self) -> bytes:
        chunk = await self.reader.read(1 << 20)
        if not chunk:
            raise IMAPError("connection closed")
        return chunk

    async def command(self, cmd: bytes, keep: bool = True) -> Response:
        tag = self._tag()
        self.writer.write(tag + b" " + cmd + b"\r\n")
        return await self.complete(tag, keep)

    async def complete(self, tag: bytes, keep: bool = True) -> Response:
        """Read until `tag`'s completion; keep the untagged bytes only if asked (big FETCHes are counted)."""
        needle = b"\r\n" + tag + b" "
        wlen = max(len(needle), len(_FETCH)) - 1
        window = b"\r\n"  # responses begin at a line start
        kept: list[bytes] = []
        fetches = nbytes = 0
        buf, self.pending = self.pending, b""
        while True:
            if not buf:
                buf = await self._read()
            hay = window + buf
            idx = hay.find(needle)
            if idx >= 0:
                end = hay.find(b"\r\n", idx + 2)
                while end < 0:
                    hay += await self._read()
                    end = hay.find(b"\r\n", idx + 2)
                body = hay[len(window):idx + 2] if idx + 2 >= len(window) else b""
                fetches += max(0, hay[:idx + 2].count(_FETCH) - window.count(_FETCH))
                nbytes += len(body)
                if keep:
                    kept.append(body)
                self.pending = hay[end + 2:]
                return Response(hay[idx + 2:end], b"".join(kept), fetches, nbytes)
            fetches += hay.count(_FETCH) - window.count(_FETCH)
            nbytes += len(buf)
            if keep:
                kept.append(buf)
            window = hay[-wlen:]
            buf = b""

    async def capabilities(self) -> set[bytes]:
        """The server's CAPABILITY list (asked once, after login), upper-cased."""
        if self.caps is None:
            r = await self.command(b"CAPABILITY")
            words: set[bytes] = set()
            for line in r.data.split(b"\r\n"):
                if line.upper().startswith(b"* CAPABILITY "):
                    words.update(w.upper() for w in line.split()[2:])
            self.caps = words
        return self.caps

    async def append(self, mailbox: str, message: bytes) -> Response:
        """APPEND as Thunderbird sends it (../shared/clients/thunderbird.md): with a non-synchronizing
        literal `{n+}` when the server offers LITERAL+ (RFC 7888), command and message in one write; else
        a synchronizing literal, waiting for the server's continuation."""
        tag = self._tag()
        if b"LITERAL+" in await self.capabilities():
            self.writer.write(tag + f' APPEND "{mailbox}" {{{len(message)}+}}\r\n'.encode() + message + b"\r\n")
            return await self.complete(tag)
        self.writer.write(tag + f' APPEND "{mailbox}" {{{len(message)}}}\r\n'.encode())
        line = await self.reader.readline() if not self.pending else await self._pending_line()
        if not line.startswith(b"+"):
            raise IMAPError(f"APPEND continuation {line[:80]!r}")
        self.writer.write(message + b"\r\n")
        return await self.complete(tag)

    async def _pending_line(self) -> bytes:
        while b"\r\n" not in self.pending:
            self.pending += await self._read()
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line + b"\r\n"


def _exists(data: bytes) -> int:
    m = re.search(rb"\* (\d+) EXISTS", data)
    return int(m.group(1)) if m else -1


def _search_uids(data: bytes) -> list[int]:
    m = re.search(rb"\* SEARCH([ \d]*)", data)
    return [int(x) for x in m.group(1).split()] if m else []


async def timed(op: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = await op()
    return time.perf_counter() - t0, value


async def select(c: Client, mailbox: str = "INBOX") -> dict[str, Any]:
    secs, r = await timed(lambda: c.command(f'SELECT "{mailbox}"'.encode()))
    if not r.ok:
        raise IMAPError(f"SELECT {r.status!r}")
    return {"seconds": secs, "exists": _exists(r.data)}


async def header_sync(c: Client) -> dict[str, Any]:
    secs, r = await timed(lambda: c.command(HEADER_SYNC, keep=False))
    if not r.ok:
        raise IMAPError(f"header sync {r.status!r}")
    return {"seconds": secs, "messages": r.fetches, "bytes": r.nbytes}


async def all_uids(c: Client) -> list[int]:
    r = await c.command(b"UID SEARCH ALL")
    return _search_uids(r.data)


async def body_fetch(c: Client, uids: list[int], count: int = 100, seed: int = 7) -> dict[str, Any]:
    picks = random.Random(seed).sample(uids, min(count, len(uids)))
    total = 0
    t0 = time.perf_counter()
    for uid in picks:
        r = await c.command(b"UID FETCH %d (BODY.PEEK[])" % uid, keep=False)
        if not r.ok or r.fetches != 1:
            raise IMAPError(f"body fetch of {uid}: {r.status!r}")
        total += r.nbytes
    return {"seconds": time.perf_counter() - t0, "messages": len(picks), "bytes": total}


async def search(c: Client, key: str, reps: int = 3) -> dict[str, Any]:
    """The median of `reps` identical searches (one alone swung 3x between runs on either side: a cold
    page or an index cache being built), with every time kept."""
    times: list[float] = []
    matches = -1
    for _ in range(reps):
        secs, r = await timed(lambda: c.command(search_command(key)))
        if not r.ok:
            raise IMAPError(f"SEARCH {r.status!r}")
        times.append(secs)
        matches = len(_search_uids(r.data))
    return {"seconds": statistics.median(times), "runs": times, "matches": matches}


async def append(c: Client, n: int, size: int = 4000, seed: int = 11) -> dict[str, Any]:
    msgs = [make_message(seed, i, size, "appender@bench.test") for i in range(min(n, 50))]
    t0 = time.perf_counter()
    for i in range(n):
        r = await c.append("INBOX", msgs[i % len(msgs)])
        if not r.ok:
            raise IMAPError(f"APPEND {r.status!r}")
    secs = time.perf_counter() - t0
    literal = "LITERAL+" if b"LITERAL+" in await c.capabilities() else "synchronizing"
    return {"seconds": secs, "messages": n, "rate": n / secs, "literal": literal}


async def concurrent(k: int, host: str, port: int, user: str, password: str, cmd: bytes) -> dict[str, Any]:
    """k clients log in and SELECT INBOX (untimed), then send `cmd` at once; time until the last completes."""
    clients = [await Client.connect(host, port, user, password) for _ in range(k)]
    try:
        for c in clients:
            await select(c)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(c.command(cmd, keep=False) for c in clients))
        secs = time.perf_counter() - t0
        if not all(r.ok for r in results):
            raise IMAPError("a concurrent command failed: " + repr([r.status for r in results if not r.ok][:1]))
        return {"seconds": secs, "clients": k, "fetches_each": results[0].fetches}
    finally:
        for c in clients:
            await c.close()


def search_command(key: str) -> bytes:
    word = SUBJECT_NEEDLE if key == "SUBJECT" else BODY_NEEDLE
    return f'UID SEARCH {key} "{word}"'.encode()


class Poller:
    """One logged-in session per user, opened before a workload, to see when its mail becomes fetchable."""

    def __init__(self, clients: dict[str, Client]) -> None:
        self.clients = clients

    @classmethod
    async def open(cls, host: str, port: int, users: list[str], password: str) -> Poller:
        clients = await asyncio.gather(*(Client.connect(host, port, u, password) for u in users))
        return cls(dict(zip(users, clients, strict=True)))

    async def _count(self, user: str) -> int:
        r = await self.clients[user].command(b"STATUS INBOX (MESSAGES)")
        m = re.search(rb"MESSAGES (\d+)", r.data)
        return int(m.group(1)) if m else 0

    async def counts(self) -> dict[str, int]:
        users = list(self.clients)
        return dict(zip(users, await asyncio.gather(*(self._count(u) for u in users)), strict=True))

    async def wait(self, expected: dict[str, int], limit: float, interval: float = 0.05) -> float | None:
        """Poll STATUS until every INBOX holds its expected count; seconds taken, or None on time-out."""
        t0 = time.perf_counter()
        left = dict(expected)
        while left:
            users = list(left)
            for u, n in zip(users, await asyncio.gather(*(self._count(u) for u in users)), strict=True):
                if n >= left[u]:
                    del left[u]
            if not left:
                break
            if time.perf_counter() - t0 > limit:
                return None
            await asyncio.sleep(interval)
        return time.perf_counter() - t0

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()))


async def standalone(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = await Client.connect(a.host, a.port, a.user, a.password)
    out["select"] = await select(c)
    out["header_sync"] = await header_sync(c)
    out["header_sync_again"] = await header_sync(c)
    out["body_fetch"] = await body_fetch(c, await all_uids(c))
    out["search_header"] = await search(c, "SUBJECT")
    out["search_body"] = await search(c, "BODY")
    await c.close()
    out["header_sync_x10"] = await concurrent(10, a.host, a.port, a.user, a.password, HEADER_SYNC)
    if a.append:
        c = await Client.connect(a.host, a.port, a.append_user, a.password)
        out["append"] = await append(c, a.append)
        await c.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--append", type=int, default=0, help="also time this many APPENDs")
    p.add_argument("--append-user", default="appender@bench.test")
    a = p.parse_args()
    if not (a.host.startswith("127.") or a.host in ("::1", "localhost")):
        p.error("loopback only")
    print(json.dumps(asyncio.run(standalone(a)), indent=1))


if __name__ == "__main__":
    main()
