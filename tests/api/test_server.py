"""The HTTP service itself: HTTPS with the runtime's certificate, port 0, stop, and the limits on Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import uuid

import httpx
import pytest
import trustme

from mailcore.tls import server_context
from tests.api.conftest import ALICE, PASSWORD, ApiFactory, make_settings, start_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_https_with_the_runtime_certificate(db_dsn: str, tmp_path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    tls = server_context(tmp_path / "server.pem", tmp_path / "server.pem")
    settings = make_settings(db_dsn, http={"tls": True, "allow_plaintext_basic": False})
    runtime, service = await start_api(db_dsn, settings, tls=tls)
    try:
        assert service.port > 0
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()}
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{service.port}", verify=client_ctx) as c:
            r = await c.get("/v1/inbox", headers=auth)  # Basic is fine over TLS
            assert r.status_code == 200
            assert (await c.get("/healthz")).status_code == 200
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/healthz")
    finally:
        await service.stop(1.0)
        await runtime.close()


async def test_https_without_a_certificate_is_a_config_error(db_dsn: str) -> None:
    from mailcore.tls import TLSConfigError

    settings = make_settings(db_dsn, http={"tls": True})
    with pytest.raises(TLSConfigError, match="http.tls"):
        await start_api(db_dsn, settings, seed=False)


async def test_stop_closes_the_listener(db_dsn: str) -> None:
    runtime, service = await start_api(db_dsn, seed=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as c:
        assert (await c.get("/healthz")).status_code == 200
    await service.stop(1.0)
    await runtime.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", service.port), timeout=1).close()


async def test_request_limit_shared_through_the_real_redis(api_factory: ApiFactory) -> None:
    prefix = f"mstest:{uuid.uuid4().hex}:"
    api = await api_factory(http={"requests_per_minute": 3},
                            redis={"url": "redis://127.0.0.1:6379/0", "key_prefix": prefix})
    codes = [(await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = [k.decode() async for k in client.scan_iter(prefix + "*")]
        assert len(keys) == 1 and keys[0].startswith(prefix + "rl:api-requests:token:")
        await client.delete(*keys)  # the bucket lives in Redis: emptying it there frees the token
    finally:
        await client.aclose()
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code == 200


async def test_redis_unreachable_never_fails_a_request(api_factory: ApiFactory) -> None:
    api = await api_factory(http={"requests_per_minute": 3},
                            redis={"url": f"redis://127.0.0.1:{_free_port()}/0", "timeout": 0.2})
    codes = [(await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # fell back to the in-process bucket: still limited
    metrics = (await api.client.get("/metrics")).text
    assert "mailserver_redis_errors_total 1.0" in metrics  # one timeout, then the breaker


async def _closed(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before closing, or None if it has not closed within `within` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None


@pytest.mark.parametrize("cap", ["max_connections_per_ip", "max_connections"])
async def test_connections_are_capped(api_factory: ApiFactory, cap: str) -> None:
    """uvicorn takes any number of connections (each a file descriptor the mail listeners share): now
    http.max_connections_per_ip and max_connections bound them, with a 503 beyond."""
    api = await api_factory(http={cap: 2})
    port = api.service.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = await _closed(reader, 5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 503 ")
    writer.close()
    held[0][1].close()
    await asyncio.sleep(0.2)
    assert (await api.client.get("/healthz")).status_code == 200  # a slot given back serves again
    held[1][1].close()


@pytest.mark.parametrize("client", ["silent", "trickle", "trickle after a request"])
async def test_a_request_head_has_a_deadline(api_factory: ApiFactory, client: str) -> None:
    """A client that connects and says nothing, or sends a header field every so often, held its
    connection for ever (no such timeout in uvicorn): now 408 and close after http.header_timeout,
    counted from the connection or from the head's first byte, however the bytes trickle in."""
    api = await api_factory(http={"header_timeout": 1.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", api.service.port)
    if client == "trickle after a request":  # keep-alive: the next head gets its own deadline
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = next(line.split(b":", 1)[1] for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:"))
        await reader.readexactly(int(length))
        await asyncio.sleep(0.7)  # most of a deadline idle between requests (within uvicorn's keep-alive)
    if client != "silent":
        writer.write(b"GET /healthz HTTP/1.1\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(40):
                    await asyncio.sleep(0.2)
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
        feeding = asyncio.create_task(trickle())
    answer = await _closed(reader, 5)
    assert answer is not None and b"HTTP/1.1 408 " in answer
    if client != "silent":
        feeding.cancel()
    writer.close()


async def test_a_request_body_has_a_deadline_between_reads(api_factory: ApiFactory) -> None:
    """A body announced and then not sent held the request (and the connection) for ever."""
    api = await api_factory(http={"body_timeout": 1.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", api.service.port)
    writer.write(b"POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api.alice.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"from\": ")
    assert await _closed(reader, 5) is not None  # closed by the server
    writer.close()
    assert (await api.client.get("/healthz")).status_code == 200
