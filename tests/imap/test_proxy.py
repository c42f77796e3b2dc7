"""The IMAP listeners behind a load balancer (PROXY protocol): required from the trusted balancer
(127.0.0.1 here), refused with BYE from anyone else (127.0.0.2), before TLS on the implicit-TLS port,
and never granting the loopback trust of the dev profile."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from config.settings import ListenerSettings
from imap.server import IMAPService
from mailcore.proxyproto import build_v1, build_v2
from tests.imap.conftest import PASSWORD, USER, World, make_settings, tls_pair
from tests.imap.test_server import Line, client_tls


@pytest.fixture
async def service(world: World, db_dsn: str, tmp_path: object):  # type: ignore[no-untyped-def]
    ctx, ca_file = tls_pair(tmp_path)
    loop = ListenerSettings(enabled=True, address="127.0.0.1", port=0)
    settings = make_settings(imap=loop, imaps=loop)  # allow_plaintext_auth: loopback trust is on
    settings = dataclasses.replace(settings, server=dataclasses.replace(
        settings.server, proxy_protocol_from=["127.0.0.1"], proxy_protocol_timeout=0.5))
    svc = IMAPService(settings, world.pool, db_dsn, ctx)  # type: ignore[arg-type]
    svc.ca_file = ca_file  # type: ignore[attr-defined]
    await svc.start()
    yield svc
    await svc.stop(1)


async def open_from(port: int, source: str) -> Line:
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return Line(r, w)


async def test_proxied_loopback_client_gets_no_plaintext_login(service: IMAPService) -> None:
    c = await open_from(service.ports["imap"], "127.0.0.1")
    c.writer.write(build_v1(("127.0.0.1", 50000), ("127.0.0.1", 143)))
    greeting = await c.line()
    assert greeting.startswith("* OK") and "LOGINDISABLED" in greeting
    assert "PRIVACYREQUIRED" in (await c.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1]
    c.writer.close()
    direct = await open_from(service.ports["imap"], "127.0.0.2")
    assert "AUTH=PLAIN" in await direct.line()
    assert (await direct.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1].startswith("a OK")
    direct.writer.close()


async def test_header_then_implicit_tls_and_the_session_sees_the_client(service: IMAPService) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", service.ports["imaps"])
    w.write(build_v2(("203.0.113.9", 4242), ("127.0.0.1", 993)))
    await w.drain()
    await w.start_tls(client_tls(service.ca_file))  # type: ignore[attr-defined]
    c = Line(r, w)
    assert (await c.line()).startswith("* OK")
    assert (await c.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1].startswith("a OK")
    assert [ip for _, ip in service.ctx.limiter._counts] == ["203.0.113.9"]  # limits count the client
    w.close()


@pytest.mark.parametrize("header", [build_v1(("192.0.2.1", 1), ("192.0.2.2", 143)), build_v2(("10.0.0.1", 1))])
async def test_forged_header_from_an_untrusted_peer_gets_bye(service: IMAPService, header: bytes) -> None:
    c = await open_from(service.ports["imap"], "127.0.0.2")
    assert (await c.line()).startswith("* OK")
    c.writer.write(header + b"a CAPABILITY\r\n")
    assert (await c.line()).startswith("* BYE")
    assert await c.line() == ""  # closed
    c.writer.close()


async def test_trusted_peer_without_header_is_closed(service: IMAPService) -> None:
    c = await open_from(service.ports["imap"], "127.0.0.1")
    c.writer.write(b"a CAPABILITY\r\n")
    assert await c.line() == ""
    c.writer.close()
