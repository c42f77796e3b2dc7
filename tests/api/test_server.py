"""The HTTP service itself: HTTPS with the runtime's certificate, port 0, stop, and the limits on Redis."""

from __future__ import annotations

import base64
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
