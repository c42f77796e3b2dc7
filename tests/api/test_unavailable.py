"""Failures the API answers for: the database away (503, one warning) and a bug (500, one error line)."""

from __future__ import annotations

import logging

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from config.settings import ListenerSettings
from mailcore.dns.resolver import Resolver
from mailserver.api import problems
from mailserver.api.middleware import AnsweredErrors
from mailserver.api.server import HttpService
from mailserver.app import Runtime, http_service
from storage.db import Database
from tests.api.conftest import make_settings

SEND = {"from": "alice@example.test", "to": ["bob@example.org"], "subject": "s", "text": "t"}


@pytest.mark.parametrize(("method", "path", "auth"), [
    ("POST", "/v1/send", "Bearer mst_0123456789abcdef"),
    ("GET", "/v1/inbox", "Bearer mst_0123456789abcdef"),
    ("GET", "/v1/inbox", "Basic YWxpY2VAZXhhbXBsZS50ZXN0OnB3"),
])
async def test_database_away_is_503_with_retry_after(dead_pool: asyncpg.Pool, method: str, path: str, auth: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Without its database the API said 500 "internal error" and logged the traceback twice; SMTP
    says 451 and IMAP NO [UNAVAILABLE] then. Now: 503 with Retry-After (RFC 9110 §15.6.4) and a
    problem document a client can act on, and one warning without a traceback."""
    settings = make_settings("postgresql://unused")
    runtime = Runtime(settings=settings, db=Database(pool=dead_pool), tls=None, resolver=Resolver(settings.dns))
    (service,) = await http_service(runtime)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=10) as client:
            caplog.clear()
            r = await client.request(method, path, headers={"Authorization": auth},
                                     json=SEND if method == "POST" else None)
        assert r.status_code == 503
        assert r.headers["retry-after"] == str(problems.RETRY_AFTER)
        assert r.headers["content-type"] == problems.PROBLEM_JSON
        assert r.json()["type"].endswith("/temporarily-unavailable")
        failures = [rec for rec in caplog.records if rec.levelno >= logging.WARNING and "request" in rec.getMessage()]
        assert [(rec.levelname, rec.exc_info) for rec in failures] == [("WARNING", None)]
    finally:
        await service.stop(1.0)


async def test_an_unexpected_exception_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A route that raises gets the generic 500 problem, and its traceback reaches the log once:
    Starlette re-raises what the handler answered, and uvicorn logged it a second time."""
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    service = HttpService(AnsweredErrors(app), ListenerSettings(True, "127.0.0.1", 0), None)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=10) as client:
            caplog.clear()
            r = await client.get("/boom")
            assert (await client.get("/boom")).status_code == 500  # the connection still serves
        assert r.status_code == 500
        assert r.json()["detail"] == "internal error; see the server log"
        assert "a bug" not in r.text
        tracebacks = [rec for rec in caplog.records if rec.exc_info]
        assert [rec.name for rec in tracebacks] == ["mailserver.api", "mailserver.api"]
    finally:
        await service.stop(1.0)
