"""Test harness for smtp_in: settings for loopback listeners on port 0, a small raw SMTP client."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg

from config.settings import ListenerSettings, Settings
from mailcore.dns import DNSLookup
from mailcore.passwords import hash_password_sync
from smtp_in.senderauth import SenderAuthentication
from smtp_in.server import SMTPService, build_smtp_services
from storage import accounts
from storage.routecache import RouteCache

LOCAL = "local.example"
VICTIM = "victim.example"
USER = f"user@{LOCAL}"
OTHER = f"other@{LOCAL}"
PASSWORD = "correct horse battery"
HASH = hash_password_sync(PASSWORD)
HOSTNAME = "mx.local.example"


def make_settings(data_dir: Path, *, limits: dict[str, object] | None = None, **smtp: object) -> Settings:
    """Settings with every SMTP listener on 127.0.0.1 port 0 and short timeouts; `limits` for [limits]."""
    base = Settings()
    listener = ListenerSettings(enabled=True, address="127.0.0.1", port=0)
    defaults: dict[str, object] = {"mx": listener, "submission": listener, "submissions": listener,
                                   "auth_failure_delay": 0.01, "idle_timeout": 10.0, "data_timeout": 10.0}
    defaults.update(smtp)
    return replace(base, smtp=replace(base.smtp, **defaults), limits=replace(base.limits, **(limits or {})),
                   server=replace(base.server, hostname=HOSTNAME, data_dir=str(data_dir)))


async def seed(pool: asyncpg.Pool) -> dict[str, int]:
    """Our domain with two accounts, an alias with a local and a remote target, and a catch-all domain."""
    await accounts.add_domain(pool, LOCAL)
    await accounts.add_domain(pool, "catchall.example")
    ids = {USER: await accounts.add_account(pool, USER, HASH),
           OTHER: await accounts.add_account(pool, OTHER, HASH)}
    await accounts.add_alias(pool, f"team@{LOCAL}", [USER, "friend@far.example"])
    await accounts.add_alias(pool, f"sales@{LOCAL}", [USER])
    await accounts.add_alias(pool, "@catchall.example", [OTHER])
    return ids


@dataclass
class Server:
    """Running listeners for one test."""

    services: dict[str, SMTPService]
    pool: asyncpg.Pool
    settings: Settings

    def port(self, kind: str) -> int:
        port = self.services[kind].port
        assert port is not None
        return port

    async def stop(self) -> None:
        for service in self.services.values():
            await service.stop(1.0)


async def start_server(pool: asyncpg.Pool, settings: Settings, tls: ssl.SSLContext | None,
                       sender_auth: SenderAuthentication | None = None, routes: RouteCache | None = None,
                       resolver: DNSLookup | None = None) -> Server:
    services = {s.kind: s for s in build_smtp_services(settings, pool, tls, sender_auth=sender_auth, routes=routes,
                                                       resolver=resolver)}
    for service in services.values():
        await service.start()
    return Server(services, pool, settings)


class RawClient:
    """Bytes in, replies out: for the tests that real clients refuse to perform (smuggling, pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, greet: bool = True) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        client = cls(reader, writer)
        if greet:
            code, _ = await client.reply()
            assert code == 220
        return client

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def reply(self, wait: float = 5.0) -> tuple[int, str]:
        """One (possibly multi-line) reply; (0, "") at EOF."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait)
            if not line:
                return 0, "\n".join(lines)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    async def cmd(self, line: str) -> tuple[int, str]:
        await self.send(line + "\r\n")
        return await self.reply()

    async def more(self, wait: float = 0.5) -> bytes:
        """Whatever else the server sends within `wait` seconds (b'' if nothing, or at EOF)."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), wait)
        except TimeoutError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
