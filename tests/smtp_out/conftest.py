"""Fixtures for the outbound queue: a clock tests move by hand, sinks that are always stopped, and a
helper that submits mail the way submission does (through `storage.delivery.Delivery`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from config.settings import QueueSettings, ServerSettings, Settings
from mailcore.mime.precompute import summarize
from mailcore.passwords import hash_password_sync
from smtp_out.worker import Outbound
from storage import accounts
from storage.delivery import Delivery, RemoteRecipient
from tests.sinks import RawMTA, Sink

SENDER = "sender@ours.example"
HOSTNAME = "mx.ours.example"
HASH = hash_password_sync("pw")


class Clock:
    """Real time plus an offset that tests advance: rows stamped by PostgreSQL's now() stay due."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def started(kind: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """A starter of loopback servers of `kind` (`await start(**kwargs)`), every one stopped at the end."""
    servers: list[Any] = []

    async def start(**kwargs: Any) -> Any:
        servers.append(await kind(**kwargs).start())
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()


@pytest.fixture
async def sinks() -> AsyncIterator[Callable[..., Any]]:
    """Start sinks (`await sinks(rcpt=...)`); all are stopped after the test."""
    async with started(Sink) as start:
        yield start


@pytest.fixture
async def mta() -> AsyncIterator[Callable[..., Any]]:
    """Start scripted raw MTAs (`await mta(replies=...)`, `tests.sinks.RawMTA`); all are stopped after."""
    async with started(RawMTA) as start:
        yield start


@pytest.fixture
async def ours(pool: asyncpg.Pool) -> int:
    """Our domain with the sender's account; returns the account id."""
    await accounts.add_domain(pool, "ours.example")
    return await accounts.add_account(pool, SENDER, HASH)


def settings(**queue: Any) -> Settings:
    """Settings for tests: our host name, fast timeouts, and the queue overrides given."""
    base = QueueSettings(connect_timeout=5, command_timeout=5, data_timeout=5, retry_initial=300,
                         retry_max=3600, poll_interval=0.2)
    return Settings(server=ServerSettings(hostname=HOSTNAME), queue=dataclasses.replace(base, **queue))


def to_sink(sink: Sink, domain: str = "far.example") -> dict[str, str]:
    return {domain: f"smtp://127.0.0.1:{sink.port}"}


def outbound(pool: asyncpg.Pool, clock: Clock, dns: Any = None, signer: Any = None, **queue: Any) -> Outbound:
    return Outbound(pool, settings(**queue), dns, clock=clock, signer=signer)


def message(subject: str = "hello", body: str = "the body") -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <r@far.example>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@ours.example>\r\n\r\n{body}\r\n").encode()


async def submit(pool: asyncpg.Pool, *recipients: str | RemoteRecipient, sender: str = SENDER,
                 raw: bytes | None = None, ret: str | None = None, envid: str | None = None,
                 account_id: int | None = None) -> int:
    """Queue a message as submission would (by `account_id`, as an authenticated submission records it;
    None: as mail relayed from the MX, e.g. to an alias elsewhere); returns the queue id."""
    d = Delivery(sender=sender, ret=ret, envid=envid, account_id=account_id)
    for r in recipients:
        d.add_remote(r if isinstance(r, RemoteRecipient) else RemoteRecipient(r))
    raw = raw or message()
    stored = await d.commit(pool, raw, summarize(raw))
    assert stored.queue_id is not None
    return stored.queue_id


async def inbox(pool: asyncpg.Pool, address: str = SENDER) -> list[bytes]:
    """The raw messages in an account's INBOX, oldest first."""
    rows = await pool.fetch(
        "SELECT m.raw FROM mailbox_messages mm JOIN mailboxes b ON b.id = mm.mailbox_id"
        " JOIN accounts a ON a.id = b.account_id JOIN messages m ON m.id = mm.message_id"
        " WHERE a.address = $1 AND b.name = 'INBOX' ORDER BY mm.uid", address)
    return [r["raw"] for r in rows]


async def until(predicate: Callable[[], Any], seconds: float = 10.0) -> None:
    """Wait until `predicate()` (sync or async) is true: the one poll loop, for states that live in
    another process's view (the database, a sink's counters) and have no event to wait on."""
    import asyncio
    import inspect

    async with asyncio.timeout(seconds):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)
