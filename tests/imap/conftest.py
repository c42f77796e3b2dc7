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


# --- a real listener on loopback ------------------------------------------------------------------

@dataclasses.dataclass
class Listening:
    world: World
    service: object
    imap_port: int
    imaps_port: int
    ca_file: str


def tls_pair(tmp_path: object) -> tuple[object, str]:
    """A server SSLContext and a CA file clients can trust (trustme)."""
    import ssl
    from pathlib import Path

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name="127.0.0.1")  # mbsync 1.4 checks the CN
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_path = Path(str(tmp_path)) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return ctx, str(ca_path)


async def start_listening(world: World, db_dsn: str, tmp_path: object, **imap: object) -> Listening:
    from config.settings import ListenerSettings
    from imap.server import IMAPService

    ctx, ca_file = tls_pair(tmp_path)
    loop = ListenerSettings(enabled=True, address="127.0.0.1", port=0)
    settings = make_settings(imap=loop, imaps=loop, **imap)
    service = IMAPService(settings, world.pool, db_dsn, ctx)  # type: ignore[arg-type]
    await service.start()
    return Listening(world, service, service.ports["imap"], service.ports["imaps"], ca_file)


@pytest.fixture
async def listening(world: World, db_dsn: str, tmp_path: object) -> AsyncIterator[Listening]:
    srv = await start_listening(world, db_dsn, tmp_path)
    yield srv
    await srv.service.stop(1)  # type: ignore[attr-defined]
