"""PROXY protocol on the HTTP listener, over real sockets: a trusted balancer (127.0.0.2 here) must send a
v1/v2 header and its source is the client the API sees (auth-failure lockout, the plaintext-Basic loopback
allowance, /v1/receive's Received); a header from anyone else, or none from the balancer, closes the
connection; HTTPS is negotiated after the header."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from mailcore.proxyproto import build_v1, build_v2
from mailcore.tls import server_context
from tests.api.conftest import ALICE, BOB, PASSWORD, Api, ApiFactory, make_settings, start_api

BALANCER = "127.0.0.2"  # trusted; every other source (127.0.0.1) connects directly
PROXY = {"server": {"proxy_protocol_from": [BALANCER], "proxy_protocol_timeout": 0.5}}


def header(version: int, source: str, port: int = 40000) -> bytes:
    destination = ("::1" if ":" in source else "127.0.0.1", 8443)
    return build_v1((source, port), destination) if version == 1 else build_v2((source, port), destination)


async def exchange(port: int, request: bytes, *, source: str = BALANCER, proxy: bytes = b"",
                   tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes] | None:
    """Send `proxy` then one HTTP request (over TLS if given); the parsed response, or None if the server
    closed the connection without answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(proxy)
        await writer.drain()
        if tls is not None:
            await writer.start_tls(tls, server_hostname="localhost")
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    except (ConnectionError, ssl.SSLError):
        return None
    finally:
        writer.close()
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), fields, body


def get(path: str, **headers: str) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n".encode()


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


@pytest.fixture
async def proxied(api_factory: ApiFactory) -> Api:
    return await api_factory(limits={"auth_failures": 2}, **PROXY)


@pytest.mark.parametrize("version", [1, 2])
async def test_auth_failures_are_counted_against_the_forwarded_address(proxied: Api, version: int) -> None:
    port, bad = proxied.service.port, get("/v1/inbox", Authorization="Bearer mst_wrong")
    for _ in range(2):
        r = await exchange(port, bad, proxy=header(version, "203.0.113.7"))
        assert r is not None and r[0] == 401
    r = await exchange(port, bad, proxy=header(version, "203.0.113.7"))
    assert r is not None and r[0] == 429 and json.loads(r[2])["limiter"] == "auth-fail-ip"
    # Another client behind the same balancer, and a direct client, have their own budgets.
    r = await exchange(port, bad, proxy=header(version, "2001:db8::7"))
    assert r is not None and r[0] == 401
    assert (await proxied.client.get("/v1/inbox", headers={"Authorization": "Bearer mst_wrong"})).status_code == 401


@pytest.mark.parametrize("version", [1, 2])
async def test_loopback_allowance_never_applies_to_a_proxied_client(proxied: Api, version: int) -> None:
    request = get("/v1/inbox", Authorization=basic(ALICE, PASSWORD))
    r = await exchange(proxied.service.port, request, proxy=header(version, "127.0.0.1"))
    assert r is not None and r[0] == 401 and "HTTPS" in json.loads(r[2])["detail"]
    # Directly from loopback the --dev allowance still holds.
    assert (await proxied.client.get("/v1/inbox", headers={"Authorization": basic(ALICE, PASSWORD)})).status_code \
        == 200


async def test_receive_names_the_forwarded_client_by_default(proxied: Api) -> None:
    msg = b"From: x@far.example\r\nTo: bob@example.test\r\nSubject: in\r\n\r\nhello\r\n"
    request = (f"POST /v1/receive?to={BOB} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               f"Authorization: Bearer {proxied.admin}\r\nContent-Type: message/rfc822\r\n"
               f"Content-Length: {len(msg)}\r\n\r\n").encode() + msg
    r = await exchange(proxied.service.port, request, proxy=header(2, "198.51.100.9"))
    assert r is not None and r[0] == 202, r
    raw = (await proxied.client.get(f"/v1/messages/{json.loads(r[2])['id']}/raw",
                                    headers=proxied.auth(proxied.bob))).content
    assert email.message_from_bytes(raw)["Received"].startswith("from unknown ([198.51.100.9])")


@pytest.mark.parametrize("version", [1, 2])
async def test_header_from_an_untrusted_peer_is_refused(proxied: Api, version: int) -> None:
    r = await exchange(proxied.service.port, get("/healthz"), source="127.0.0.1",
                       proxy=header(version, "203.0.113.7"))
    assert r is None
    assert (await proxied.client.get("/healthz")).status_code == 200  # without one it is served


async def test_trusted_peer_without_a_header_is_refused(proxied: Api) -> None:
    assert await exchange(proxied.service.port, get("/healthz")) is None  # HTTP where the header belongs
    # Silent: closed once proxy_protocol_timeout (0.5 s) has passed.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.service.port, local_addr=(BALANCER, 0))
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


@pytest.fixture
async def https(db_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    settings = make_settings(db_dsn, http={"tls": True, "allow_plaintext_basic": False}, **PROXY)
    runtime, service = await start_api(db_dsn, settings, tls=server_context(tmp_path / "server.pem",
                                                                            tmp_path / "server.pem"))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield service.port, client_ctx
    await service.stop(1.0)
    await runtime.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_https_after_the_header(https: tuple[int, ssl.SSLContext], version: int) -> None:
    port, client_ctx = https
    r = await exchange(port, get("/v1/inbox", Authorization=basic(ALICE, PASSWORD)),
                       proxy=header(version, "203.0.113.7"), tls=client_ctx)
    assert r is not None and r[0] == 200, r
    # A direct HTTPS client is served too; a header from it, even before TLS, is refused.
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=client_ctx) as c:
        assert (await c.get("/healthz")).status_code == 200
    assert await exchange(port, get("/healthz"), source="127.0.0.1", proxy=header(version, "203.0.113.7"),
                          tls=client_ctx) is None


async def test_stop_closes_connections_still_waiting_for_their_header(api_factory: ApiFactory) -> None:
    api = await api_factory(server={"proxy_protocol_from": [BALANCER], "proxy_protocol_timeout": 30.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", api.service.port, local_addr=(BALANCER, 0))
    try:
        await asyncio.sleep(0.1)
        stopping: Any = asyncio.create_task(api.service.stop(1.0))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await stopping
    finally:
        writer.close()
