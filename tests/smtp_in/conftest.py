"""Fixtures for smtp_in: trustme certificates and running listeners on a fresh database."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import asyncpg
import pytest
import trustme
import uvloop

from tests.smtp_in.harness import HOSTNAME, Server, make_settings, seed, start_server


def pytest_asyncio_loop_factories(config: pytest.Config,
                                   item: pytest.Item) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked `both_loops` run on the standard loop and on uvloop, the two `serve` may run on
    (`server.event_loop`): TLS (STARTTLS's transport swap, implicit TLS behind the PROXY gate) and
    the reply batching touch the transports directly. The others run on the standard loop."""
    if item.get_closest_marker("both_loops"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOSTNAME, "localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def accounts_ids(pool: asyncpg.Pool) -> dict[str, int]:
    return await seed(pool)


@pytest.fixture
async def server(pool: asyncpg.Pool, accounts_ids: dict[str, int], server_tls: ssl.SSLContext,
                 tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(pool, make_settings(tmp_path), server_tls)
    yield srv
    await srv.stop()
