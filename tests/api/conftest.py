"""The API under test: the real HTTP service (uvicorn on a loopback port 0) on a fresh PostgreSQL database,
driven with httpx over real sockets."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from config.settings import (
    DNSSettings,
    HTTPSettings,
    LimitSettings,
    ListenerSettings,
    RedisSettings,
    Settings,
)
from mailcore.dns.resolver import Resolver
from mailcore.passwords import hash_password_sync
from mailserver.api.server import HttpService
from mailserver.app import Runtime, http_service
from storage import accounts, tokens
from storage.db import Database
from tests.dnsserver import DNSTestServer

PASSWORD = "correct horse battery"
HASH = hash_password_sync(PASSWORD)
DOMAIN = "example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"


def make_settings(dsn: str, *, http: dict[str, Any] | None = None, redis: dict[str, Any] | None = None,
                  limits: dict[str, Any] | None = None, dns: DNSTestServer | None = None,
                  auth: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
                  **smtp: Any) -> Settings:
    base = Settings()
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, hostname="mail.example.test", data_dir="/nonexistent",
                                   **(server or {})),
        dns=DNSSettings(nameservers=[dns.host], port=dns.port, timeout=0.5) if dns else base.dns,
        auth=dataclasses.replace(base.auth, **(auth or {})),
        database=dataclasses.replace(base.database, dsn=dsn, pool_min=1, pool_max=5),
        http=dataclasses.replace(HTTPSettings(), listener=ListenerSettings(True, "127.0.0.1", 0),
                                 **{"tls": False, "allow_plaintext_basic": True, **(http or {})}),
        redis=dataclasses.replace(RedisSettings(), **(redis or {})),
        limits=dataclasses.replace(LimitSettings(), **(limits or {})),
        smtp=dataclasses.replace(base.smtp, **smtp),
    )


@dataclass
class Api:
    """A running API: its client, the store, tokens for the seeded accounts."""

    client: httpx.AsyncClient
    db: Database
    runtime: Runtime
    service: HttpService
    alice: str  # token with send, read
    bob: str  # token with send, read
    admin: str  # bob's token with admin only
    readonly: str  # alice's token with read only

    @property
    def pool(self) -> Any:
        return self.db.pool

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


async def start_api(dsn: str, settings: Settings | None = None, tls: Any = None,
                    seed: bool = True) -> tuple[Runtime, HttpService]:
    settings = settings or make_settings(dsn)
    db = await Database.open(settings.database, "/nonexistent")
    if seed:
        await accounts.add_domain(db.pool, DOMAIN)
        await accounts.add_account(db.pool, ALICE, HASH)
        await accounts.add_account(db.pool, BOB, HASH)
    runtime = Runtime(settings=settings, db=db, tls=tls, resolver=Resolver(settings.dns))
    (service,) = await http_service(runtime)
    assert isinstance(service, HttpService)
    await service.start()
    return runtime, service


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture(scope="session")
def empty_dns() -> Iterator[DNSTestServer]:
    """A loopback DNS server with no records: /v1/receive's sender authentication asks it (never the
    machine's resolvers) unless a test gives its own zone."""
    with DNSTestServer({}) as server:
        yield server


@pytest.fixture
async def api_factory(db_dsn: str, empty_dns: DNSTestServer) -> AsyncIterator[ApiFactory]:
    """Start an API with custom settings (at most one per test)."""
    running: list[tuple[Runtime, HttpService, httpx.AsyncClient]] = []

    async def factory(**kw: Any) -> Api:
        settings = make_settings(db_dsn, **{"dns": empty_dns, **kw})
        runtime, service = await start_api(db_dsn, settings)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=10)
        running.append((runtime, service, client))
        pool = runtime.db.pool
        _, alice = await tokens.create_token(pool, ALICE, ["send", "read"], "alice")
        _, bob = await tokens.create_token(pool, BOB, ["send", "read"], "bob")
        _, admin = await tokens.create_token(pool, BOB, ["admin"], "gateway")
        _, readonly = await tokens.create_token(pool, ALICE, ["read"], "reader")
        return Api(client=client, db=runtime.db, runtime=runtime, service=service, alice=alice, bob=bob,
                   admin=admin, readonly=readonly)

    yield factory
    for runtime, service, client in running:
        await client.aclose()
        await service.stop(1.0)
        await runtime.close()


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    """The API with default settings, in-process rate limits."""
    return await api_factory()
