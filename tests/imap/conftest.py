"""IMAP test fixtures: an account over a real store, messages delivered through `storage.delivery`,
and sessions driven by bytes through a fake transport (the transcript tier)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from config.settings import IMAPSettings, ServerSettings, Settings
from imap.session import ServerContext, Session
from mailcore.mime.precompute import summarize
from mailcore.passwords import hash_password
from storage import accounts
from storage.delivery import Delivery, LocalRecipient

USER = "alice@example.test"
PASSWORD = "correct horse"


def make_settings(**imap: object) -> Settings:
    base = dict(allow_plaintext_auth=True, auth_failure_delay=0.0)
    base.update(imap)
    return Settings(server=ServerSettings(hostname="imap.example.test"),
                    imap=dataclasses.replace(IMAPSettings(), **base))  # type: ignore[arg-type]


def message(n: int = 1, subject: str | None = None, body: str = "Hello there.\r\n", **headers: str) -> bytes:
    lines = [f"From: Bob Sender <bob{n}@example.org>", "To: Alice <alice@example.test>",
             f"Subject: {subject or f'message {n}'}", f"Message-ID: <m{n}@example.org>",
             "Date: Mon, 2 Nov 2026 10:00:00 +0000"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class FakeTransport:
    """Collects what the session writes."""

    def __init__(self, peer_ip: str = "127.0.0.1", secure: bool = False) -> None:
        self.peer_ip = peer_ip
        self.secure = secure
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.out += data

    async def drain(self) -> None:
        pass

    async def start_tls(self) -> None:
        self.secure = True

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class Client:
    """A session plus its transport: `await c("a1 NOOP")` returns the response text."""

    def __init__(self, session: Session, transport: FakeTransport) -> None:
        self.session = session
        self.transport = transport

    async def raw(self, data: bytes) -> bytes:
        await self.session.feed(data)
        return self.transport.take()

    async def __call__(self, line: str | bytes) -> str:
        data = line.encode() if isinstance(line, str) else line
        return (await self.raw(data + b"\r\n")).decode("utf-8", "replace")


@dataclasses.dataclass
class World:
    pool: asyncpg.Pool
    account_id: int
    settings: Settings

    async def deliver(self, raw: bytes, mailbox: str = "INBOX", to: str = USER) -> int:
        d = Delivery(sender="bob@example.org")
        d.add_local(LocalRecipient(self.account_id, to, mailbox))
        stored = await d.commit(self.pool, raw, summarize(raw))
        return stored.entries[0][1]

    async def client(self, *, login: bool = True, secure: bool = False, peer: str = "127.0.0.1",
                     settings: Settings | None = None, notifier: object = None) -> Client:
        ctx = ServerContext(settings or self.settings, self.pool, notifier, None)  # type: ignore[arg-type]
        transport = FakeTransport(peer, secure)
        session = Session(ctx, transport)
        await session.greet()
        transport.take()
        c = Client(session, transport)
        if login:
            out = await c(f'L1 LOGIN {USER} "{PASSWORD}"')
            assert "L1 OK" in out, out
        return c


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    await accounts.add_domain(pool, "example.test")
    account_id = await accounts.add_account(pool, USER, await hash_password(PASSWORD))
    yield World(pool, account_id, make_settings())


ClientFactory = Callable[..., Client]
