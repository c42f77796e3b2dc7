"""SMTP load generator: N messages of one size over C concurrent, reused connections.

Raw asyncio streams, no smtplib: each connection sends EHLO once, then per message
`[RSET] MAIL RCPT DATA` in one write when the server offers PIPELINING (RFC 2920), the body with its
terminator in one write, and reads the replies. A transaction's latency runs from sending MAIL to the
reply after the final dot. Messages come from bench/messages.py (a pool of distinct ones, cycled, already
dot-stuffed), so the generator spends its CPU on the socket, not on building mail. It reports its own CPU
use, so a run can show the generator was not the bottleneck.

    python bench/loadgen.py --port 10025 -n 2000 -c 50 --size 2000 [--auth user:pass] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from messages import make_message  # noqa: E402

POOL = 64  # distinct messages per run; more only costs memory


@dataclass
class Result:
    target: str
    size: int
    concurrency: int
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    client_cpu: float = 0.0  # the generator's CPU seconds / wall seconds (1.0 = one core busy)
    reconnects: int = 0  # connections the server closed (421, limits) that were opened again
    per_rcpt: dict[str, int] = field(default_factory=dict)  # accepted messages per recipient
    errors: list[str] = field(default_factory=list)


class SMTPError(Exception):
    pass


class Closed(SMTPError):
    """The server closed the connection (or said 421): open another and go on, as an MTA would."""


def dot_stuff(raw: bytes) -> bytes:
    """RFC 5321 §4.5.2: a leading dot is doubled; the body ends CRLF.CRLF."""
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    if raw.startswith(b"."):
        raw = b"." + raw
    return raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise Closed("connection closed")
        lines.append(line[4:].rstrip())
        if line[3:4] != b"-":
            if line.startswith(b"421"):
                raise Closed(f"421 {line[4:60].decode(errors='replace').strip()}")
            return int(line[:3]), lines


class Generator:
    def __init__(self, host: str, port: int, n: int, concurrency: int, size: int, seed: int,
                 rcpts: list[str], sender: str, auth: str | None, timeout: float) -> None:
        self.host, self.port, self.n, self.concurrency = host, port, n, concurrency
        self.sender, self.rcpts, self.auth, self.timeout = sender, rcpts, auth, timeout
        self.bodies = [dot_stuff(make_message(seed, i, size, rcpts[i % len(rcpts)], sender))
                       for i in range(min(n, POOL))]
        self.next = 0
        self.retry: list[int] = []  # messages whose connection closed before their final reply
        self.latencies: list[float] = []
        self.per_rcpt: dict[str, int] = {}
        self.failed = 0
        self.reconnects = 0
        self.errors: list[str] = []

    def _take(self) -> int | None:
        if self.retry:
            return self.retry.pop()
        if self.next >= self.n:
            return None
        self.next += 1
        return self.next - 1

    def _more(self) -> bool:
        return bool(self.retry) or self.next < self.n

    async def connection(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        try:
            code, _ = await read_reply(reader)
            if code != 220:
                raise SMTPError(f"greeting {code}")
            writer.write(b"EHLO loadgen.bench.test\r\n")
            code, ext = await read_reply(reader)
            if code != 250:
                raise SMTPError(f"EHLO {code}")
            pipelining = any(e.upper().startswith(b"PIPELINING") for e in ext)
            if self.auth:
                user, _, password = self.auth.partition(":")
                token = base64.b64encode(f"\0{user}\0{password}".encode())
                writer.write(b"AUTH PLAIN " + token + b"\r\n")
                code, _ = await read_reply(reader)
                if code != 235:
                    raise SMTPError(f"AUTH {code}")
            first = True
            while (i := self._take()) is not None:
                try:
                    first = await self._transaction(reader, writer, i, first, pipelining)
                except Closed:
                    self.retry.append(i)
                    raise
            writer.write(b"QUIT\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def _transaction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int,
                           first: bool, pipelining: bool) -> bool:
        """One message: [RSET] MAIL RCPT DATA, body; False once a transaction was attempted."""
        rcpt = self.rcpts[i % len(self.rcpts)]
        cmds = [] if first else [b"RSET\r\n"]
        cmds += [f"MAIL FROM:<{self.sender}>\r\n".encode(), f"RCPT TO:<{rcpt}>\r\n".encode(), b"DATA\r\n"]
        t0 = time.perf_counter()
        codes = []
        if pipelining:
            writer.write(b"".join(cmds))
            for _ in cmds:
                codes.append((await read_reply(reader))[0])
        else:
            for cmd in cmds:
                writer.write(cmd)
                codes.append((await read_reply(reader))[0])
        if codes[-1] != 354:
            self.failed += 1
            self._note(f"envelope replies {codes}")
            return False
        writer.write(self.bodies[i % len(self.bodies)])
        code, text = await read_reply(reader)
        if code == 250:
            self.latencies.append(time.perf_counter() - t0)
            self.per_rcpt[rcpt] = self.per_rcpt.get(rcpt, 0) + 1
        else:
            self.failed += 1
            self._note(f"DATA {code} {b' '.join(text)[:80]!r}")
        return False

    def _note(self, error: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(error)

    async def run(self) -> Result:
        result = Result(target=f"{self.host}:{self.port}", size=len(self.bodies[0]), concurrency=self.concurrency)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()

        async def worker() -> None:
            while self._more():
                try:
                    await self.connection()
                except Closed as e:
                    self.reconnects += 1
                    if self.reconnects > 10 * self.n + 100:
                        self._note(f"giving up reconnecting: {e}")
                        return
                    if self.reconnects <= 3:
                        self._note(f"reconnected after: {e}")
                except (OSError, SMTPError, ValueError) as e:
                    self._note(f"connection: {e}")
                    return

        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(self.concurrency))), self.timeout)
        except TimeoutError:
            self._note(f"timed out after {self.timeout:.0f} s")
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        lat = sorted(self.latencies)
        result.sent = len(lat)
        result.failed = self.failed + (self.n - len(lat) - self.failed)
        result.seconds = round(elapsed, 3)
        result.rate = round(len(lat) / elapsed, 1) if elapsed else 0.0
        if lat:
            result.p50_ms = round(lat[len(lat) // 2] * 1000, 2)
            result.p99_ms = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2)
            result.max_ms = round(lat[-1] * 1000, 2)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        result.client_cpu = round(cpu / elapsed, 2) if elapsed else 0.0
        result.reconnects = self.reconnects
        result.per_rcpt = self.per_rcpt
        result.errors = self.errors
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", "--messages", type=int, default=1000)
    p.add_argument("-c", "--concurrency", type=int, default=10)
    p.add_argument("--size", type=int, default=2000, help="approximate message size in bytes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--domain", default="bench.test", help="recipients are u1..uN@DOMAIN")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--sender", default="sender@example.org")
    p.add_argument("--auth", help="user:password for AUTH PLAIN (submission)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    a = p.parse_args()
    if not (a.host.startswith("127.") or a.host in ("::1", "localhost")):
        p.error("the load generator sends to loopback only")
    rcpts = [f"u{i}@{a.domain}" for i in range(1, a.users + 1)]
    gen = Generator(a.host, a.port, a.messages, a.concurrency, a.size, a.seed, rcpts, a.sender, a.auth, a.timeout)
    result = asyncio.run(gen.run())
    if a.json:
        print(json.dumps(asdict(result)))
    else:
        print(f"{result.target}: {result.sent} sent, {result.failed} failed in {result.seconds} s: "
              f"{result.rate} msg/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
              f"generator CPU {result.client_cpu:.2f} cores")
        for e in result.errors:
            print("  error:", e)


if __name__ == "__main__":
    main()
