"""Fixtures for smtp_in: trustme certificates and running listeners on a fresh database."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import trustme

from tests.smtp_in.harness import HOSTNAME, Server, make_settings, seed, start_server


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
