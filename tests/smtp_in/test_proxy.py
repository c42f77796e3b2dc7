"""The SMTP listeners behind a load balancer: the PROXY header names the client for Received, limits and
AUTH policy; it is required from a trusted balancer and refused from anyone else.

The balancer is 127.0.0.1 here; an untrusted client connects from 127.0.0.2 (also loopback on Linux).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from mailcore.proxyproto import build_v1, build_v2
from tests.smtp_in.harness import HOSTNAME, LOCAL, USER, RawClient, Server, make_settings, start_server
from tests.smtp_in.test_mx import inbox

pytestmark = pytest.mark.usefixtures("accounts_ids")


@pytest.fixture
async def proxied(pool: asyncpg.Pool, server_tls: ssl.SSLContext, tmp_path: Path) -> Server:
    settings = make_settings(tmp_path, allow_plaintext_auth=True)
    settings = replace(settings, server=replace(settings.server, proxy_protocol_from=["127.0.0.1/32"],
                                                proxy_protocol_timeout=0.5))
    srv = await start_server(pool, settings, server_tls)
    yield srv  # type: ignore[misc]
    await srv.stop()


async def connect(port: int, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), ssl=tls,
                                                   server_hostname=HOSTNAME if tls else None)
    return RawClient(reader, writer)


async def test_v1_header_names_the_client_in_received(proxied: Server) -> None:
    c = await connect(proxied.port("mx"))
    await c.send(build_v1(("203.0.113.7", 40000), ("198.51.100.1", 25)))
    assert (await c.reply())[0] == 220
    for line in ("EHLO client.remote.example", "MAIL FROM:<a@remote.example>", f"RCPT TO:<{USER}>", "DATA"):
        assert (await c.cmd(line))[0] in (250, 354)
    assert (await c.cmd("Subject: hi\r\n\r\nbody\r\n."))[0] == 250
    await c.close()
    (stored,) = await inbox(proxied.pool, USER)
    assert b"Received: from client.remote.example ([203.0.113.7])" in stored
    assert b"127.0.0.1" not in stored


@pytest.mark.parametrize("version", [1, 2])
async def test_loopback_trust_never_applies_through_the_balancer(proxied: Server, version: int) -> None:
    # The client behind the balancer is on 127.0.0.1 too: still no plaintext AUTH.
    c = await connect(proxied.port("submission"))
    header = build_v1(("127.0.0.1", 40000), ("127.0.0.1", 587)) if version == 1 else build_v2(("127.0.0.1", 1))
    await c.send(header + b"EHLO client\r\n")
    assert (await c.reply())[0] == 220
    code, text = await c.reply()
    assert code == 250 and "AUTH" not in text
    assert (await c.cmd("AUTH PLAIN AHVzZXIAcGFzcw=="))[0] == 530  # TLS required
    await c.close()
    # The same address connecting directly (untrusted, so no header) keeps the dev loopback trust.
    direct = await connect(proxied.port("submission"), source="127.0.0.2")
    assert (await direct.reply())[0] == 220
    assert "AUTH PLAIN" in (await direct.cmd("EHLO client"))[1]
    await direct.close()


async def test_local_command_is_the_balancer_itself_untrusted(proxied: Server) -> None:
    c = await connect(proxied.port("submission"))
    await c.send(build_v2(None))
    assert (await c.reply())[0] == 220
    assert "AUTH" not in (await c.cmd("EHLO check"))[1]
    await c.close()


@pytest.mark.both_loops
async def test_header_before_implicit_tls(proxied: Server) -> None:
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.port("submissions"))
    writer.write(build_v2(("198.51.100.9", 5555), ("127.0.0.1", 465)))
    await writer.drain()
    await writer.start_tls(client_tls, server_hostname=HOSTNAME)
    c = RawClient(reader, writer)
    assert (await c.reply())[0] == 220
    assert "AUTH PLAIN" in (await c.cmd("EHLO client"))[1]  # TLS is up: AUTH offered
    await c.close()


@pytest.mark.parametrize("header", [build_v1(("192.0.2.1", 1), ("192.0.2.2", 25)), build_v2(("10.0.0.1", 1))])
async def test_forged_header_from_an_untrusted_peer_is_refused(proxied: Server, header: bytes) -> None:
    c = await connect(proxied.port("mx"), source="127.0.0.2")
    assert (await c.reply())[0] == 220
    await c.send(header + b"EHLO x\r\n")
    code, text = await c.reply()
    assert code == 421 and "PROXY" in text
    assert await c.more() == b""  # closed
    await c.close()


@pytest.mark.both_loops
async def test_forged_header_on_implicit_tls_is_refused(proxied: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.port("submissions"),
                                                   local_addr=("127.0.0.2", 0))
    writer.write(build_v1(("192.0.2.1", 1), ("192.0.2.2", 465)))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(100), 5) == b""
    writer.close()


async def test_trusted_peer_must_send_a_header(proxied: Server) -> None:
    c = await connect(proxied.port("mx"))
    await c.send(b"EHLO x\r\n")
    assert await asyncio.wait_for(c.reader.read(100), 5) == b""  # no banner, closed
    await c.close()


async def test_trusted_peer_silent_is_closed_after_the_timeout(proxied: Server) -> None:
    c = await connect(proxied.port("mx"))
    assert await asyncio.wait_for(c.reader.read(100), 5) == b""
    await c.close()


@pytest.mark.both_loops
async def test_header_split_over_packets_and_pipelined_commands(proxied: Server) -> None:
    c = await connect(proxied.port("mx"))
    header = build_v1(("203.0.113.8", 1), ("198.51.100.1", 25))
    await c.send(header[:10])
    await asyncio.sleep(0.05)
    await c.send(header[10:])
    assert (await c.reply())[0] == 220
    assert (await c.cmd("HELO x"))[0] == 250
    assert (await c.cmd("RCPT TO:<relaytest@victim.example>"))[0] == 503
    await c.close()


async def test_relay_is_refused_for_a_proxied_internal_client(proxied: Server) -> None:
    c = await connect(proxied.port("mx"))
    await c.send(build_v2(("127.0.0.1", 1234), ("127.0.0.1", 25)))
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO x"))[0] == 250
    assert (await c.cmd("MAIL FROM:<probe@far.example>"))[0] == 250
    assert (await c.cmd("RCPT TO:<relaytest@far.example>"))[0] >= 550
    assert (await c.cmd(f"RCPT TO:<relaytest%far.example@{LOCAL}>"))[0] >= 500
    await c.close()


async def test_handshake_caps_apply_to_the_client_behind_the_balancer(
        pool: asyncpg.Pool, server_tls: ssl.SSLContext, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On 465 behind a balancer the TLS handshake caps count the client the PROXY header names; one
    over them is closed quietly (it was an AssertionError inside data_received, logged as a fatal
    protocol error by asyncio)."""
    settings = make_settings(tmp_path, max_connections_per_ip=1)
    settings = replace(settings, server=replace(settings.server, proxy_protocol_from=["127.0.0.1/32"]))
    srv = await start_server(pool, settings, server_tls)
    try:
        header = build_v1(("203.0.113.7", 40000), ("198.51.100.1", 465))
        first = await connect(srv.port("submissions"))
        await first.send(header)  # and no handshake: holds the client's one handshake slot
        await asyncio.sleep(0.1)
        second = await connect(srv.port("submissions"))
        await second.send(header)
        assert await asyncio.wait_for(second.reader.read(), 5) == b""  # closed
        other = await connect(srv.port("submissions"))  # another client behind the same balancer
        await other.send(build_v1(("203.0.113.8", 40000), ("198.51.100.1", 465)))
        await asyncio.sleep(0.2)
        assert not other.reader.at_eof()
        for c in (first, second, other):
            await c.close()
    finally:
        await srv.stop()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
