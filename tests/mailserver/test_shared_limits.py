"""The process as the composition root builds it: one set of limits and one `Metrics` shared by SMTP,
IMAP, the queue and the API, over real sockets on a real database (and the real Redis where named).

Each test starts every service in this event loop from `mailserver.app`'s own factories, so what is
shared is exactly what `mailserver serve` shares.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import httpx
import pytest

from config.settings import ListenerSettings, Settings
from imap.server import IMAPService
from mailcore import replies
from mailcore.passwords import hash_password_sync
from mailserver import app
from mailserver.api.server import HttpService
from smtp_in.server import SMTPService
from storage import accounts, tokens
from tests.sinks import Sink
from tests.smtp_in.harness import RawClient
from tests.smtp_in.test_mx import code, parsed

PASSWORD = "correct horse battery"
HASH = hash_password_sync(PASSWORD)
ALICE = "alice@shared.example"
BOB = "bob@shared.example"
REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Running:
    runtime: app.Runtime
    http: httpx.AsyncClient
    token: str  # alice's, send + read

    def port(self, name: str) -> int:
        for service in self.runtime.services:
            if isinstance(service, SMTPService) and service.name == f"smtp-{name}":
                assert service.port is not None
                return service.port
            if isinstance(service, IMAPService) and name in service.ports:
                return service.ports[name]
            if isinstance(service, HttpService) and name == "http":
                assert service.port is not None
                return service.port
        raise LookupError(name)

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts labels
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+-]+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def until(ok: Callable[[str], bool], srv: Running) -> None:
    """Scrape /metrics until `ok` holds for the text (15 s at most)."""
    async with asyncio.timeout(15):
        while True:
            if ok(await srv.metrics()):
                return
            await asyncio.sleep(0.05)


def settings_for(dsn: str, data_dir: Path, *, limits: dict[str, Any] | None = None,
                 redis: dict[str, Any] | None = None, queue: dict[str, Any] | None = None) -> Settings:
    base = Settings()
    on = ListenerSettings(True, "127.0.0.1", 0)
    off = ListenerSettings(False, "127.0.0.1", 0)
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, hostname="mail.shared.example", data_dir=str(data_dir)),
        database=dataclasses.replace(base.database, dsn=dsn, pool_min=1, pool_max=8),
        smtp=dataclasses.replace(base.smtp, mx=on, submission=on, submissions=off, allow_plaintext_auth=True,
                                 auth_failure_delay=0.01),
        imap=dataclasses.replace(base.imap, imap=on, imaps=off, allow_plaintext_auth=True,
                                 auth_failure_delay=0.01),
        http=dataclasses.replace(base.http, listener=on, tls=False, allow_plaintext_basic=True),
        dns=dataclasses.replace(base.dns, nameservers=["127.0.0.1"], port=9, timeout=0.5),
        queue=dataclasses.replace(base.queue, poll_interval=0.2, **(queue or {})),
        limits=dataclasses.replace(base.limits, **(limits or {})),
        redis=dataclasses.replace(base.redis, **(redis or {})),
    )


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(db_dsn: str, pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Start]:
    await accounts.add_domain(pool, "shared.example")
    await accounts.add_account(pool, ALICE, HASH)
    await accounts.add_account(pool, BOB, HASH)
    _, token = await tokens.create_token(pool, ALICE, ["send", "read"], "test")
    started: list[Running] = []

    async def go(**kw: Any) -> Running:
        runtime = await app.build(settings_for(db_dsn, tmp_path, **kw))
        for factory in app.service_factories():
            for service in await factory(runtime):
                await service.start()
                runtime.services.append(service)
        running = Running(runtime, httpx.AsyncClient(timeout=10), token)
        running.http.base_url = httpx.URL(f"http://127.0.0.1:{running.port('http')}")
        started.append(running)
        return running

    yield go
    for running in started:
        await running.http.aclose()
        for service in reversed(running.runtime.services):
            await service.stop(1.0)
        await running.runtime.close()


def plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


async def smtp_auth(port: int, login: str, password: str) -> tuple[int, str]:
    client = await RawClient.connect(port)
    await client.cmd("EHLO laptop.example")
    result = parsed((await client.cmd(f"AUTH PLAIN {plain(login, password)}"))[1])
    await client.cmd("QUIT")
    await client.close()
    return result


async def imap_login(port: int, login: str, password: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # greeting
        writer.write(f'a LOGIN "{login}" "{password}"\r\n'.encode())
        while True:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode()
            if line.startswith("a "):
                return line.strip()
    finally:
        writer.close()


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


@pytest.mark.parametrize("backend", ["in-process", "redis"])
async def test_auth_failures_lock_out_across_smtp_imap_and_http(start: Start, backend: str) -> None:
    redis = {"url": REDIS, "key_prefix": f"mstest:{uuid.uuid4().hex}:"} if backend == "redis" else None
    srv = await start(limits={"auth_failures": 3}, redis=redis)
    smtp, imap = srv.port("submission"), srv.port("imap")
    # Two wrong passwords over SMTP and one over IMAP use up the account's budget of three...
    assert await smtp_auth(smtp, ALICE, "guess") == code(replies.AUTH_FAILED)
    assert (await imap_login(imap, ALICE, "guess")).startswith("a NO [AUTHENTICATIONFAILED]")
    assert await smtp_auth(smtp, ALICE, "guess") == code(replies.AUTH_FAILED)
    # ...so even the right password is refused on every protocol now.
    assert (await imap_login(imap, ALICE, PASSWORD)).startswith("a NO [UNAVAILABLE]")
    assert await smtp_auth(smtp, ALICE, PASSWORD) == code(replies.AUTH_TEMPORARILY_LOCKED)
    r = await srv.http.get("/v1/inbox", headers=basic(ALICE, PASSWORD))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # The client address is locked too (three failures from 127.0.0.1), for other accounts as well.
    assert await smtp_auth(smtp, BOB, PASSWORD) == code(replies.AUTH_TEMPORARILY_LOCKED)
    text = await srv.metrics()
    assert metric(text, "mailserver_auth_failures_total", protocol="smtp") == 2
    assert metric(text, "mailserver_auth_failures_total", protocol="imap") == 1
    assert metric(text, "mailserver_rate_limit_hits_total", limiter="auth-fail-ip") >= 1


async def test_http_failures_count_against_imap(start: Start) -> None:
    srv = await start(limits={"auth_failures": 2})
    for _ in range(2):
        assert (await srv.http.get("/v1/inbox", headers=basic(BOB, "guess"))).status_code == 401
    assert (await imap_login(srv.port("imap"), BOB, PASSWORD)).startswith("a NO [UNAVAILABLE]")


async def test_connection_rate_limit_is_421(start: Start) -> None:
    srv = await start(limits={"smtp_connections_per_minute": 2})
    first = await RawClient.connect(srv.port("mx"))
    second = await RawClient.connect(srv.port("submission"))  # the bucket spans listeners
    third = await RawClient.connect(srv.port("mx"), greet=False)
    assert parsed((await third.reply())[1]) == code(replies.CONNECTION_RATE_EXCEEDED) == (421, "4.7.0")
    assert (await third.reply())[0] == 0  # closed
    # A rate, not a cap: closing the others does not give the token back.
    for c in (first, second):
        await c.cmd("QUIT")
        await c.close()
    fourth = await RawClient.connect(srv.port("mx"), greet=False)
    assert parsed((await fourth.reply())[1]) == (421, "4.7.0")
    text = await srv.metrics()
    assert metric(text, "mailserver_rate_limit_hits_total", limiter="smtp-connections") == 2
    assert metric(text, "mailserver_smtp_sessions_total", listener="mx") == 3


async def _submit(port: int, to: str, subject: str) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                             local_hostname="laptop.example")
    await client.connect()
    await client.login(ALICE, PASSWORD)
    return client


def _msg(to: str, subject: str) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@shared.example>"
            f"\r\n\r\nbody\r\n").encode()


async def test_messages_per_hour_spans_smtp_submission_and_the_api(start: Start) -> None:
    srv = await start(limits={"messages_per_hour": 2})
    client = await _submit(srv.port("submission"), BOB, "one")
    assert (await client.sendmail(ALICE, [BOB], _msg(BOB, "one")))[0] == {}
    r = await srv.http.post("/v1/send", headers={"Authorization": f"Bearer {srv.token}"},
                            json={"from": ALICE, "to": [BOB], "subject": "two", "text": "x"})
    assert r.status_code == 202, r.text
    # The budget of two is spent: SMTP refuses at MAIL with 451 4.7.1, the API with 429.
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await client.sendmail(ALICE, [BOB], _msg(BOB, "three"))
    assert (err.value.code, err.value.message.split()[0]) == code(replies.MESSAGE_RATE_EXCEEDED)
    await client.quit()
    r = await srv.http.post("/v1/send", headers={"Authorization": f"Bearer {srv.token}"},
                            json={"from": ALICE, "to": [BOB], "subject": "four", "text": "x"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    text = await srv.metrics()
    assert metric(text, "mailserver_messages_rejected_total", via="submission", reason="rate_limited") == 1
    assert metric(text, "mailserver_rate_limit_hits_total", limiter="messages") == 2


async def test_metrics_move_as_mail_flows_and_smtp_submissions_show_in_sent(start: Start) -> None:
    sink = await Sink().start()
    try:
        srv = await start(queue={"transports": {"far.example": f"smtp://127.0.0.1:{sink.port}"}})
        before = await srv.metrics()
        assert metric(before, "mailserver_imap_sessions") == 0
        # MX: one accepted, one unknown user, one relay attempt, one with bare LF (smuggling defence).
        mx = await RawClient.connect(srv.port("mx"))
        await mx.cmd("EHLO remote.example")
        await mx.cmd("MAIL FROM:<someone@remote.example>")
        assert (await mx.cmd(f"RCPT TO:<{BOB}>"))[0] == 250
        assert parsed((await mx.cmd("RCPT TO:<nobody@shared.example>"))[1]) == code(replies.MAILBOX_UNAVAILABLE)
        assert parsed((await mx.cmd("RCPT TO:<x@elsewhere.example>"))[1]) == code(replies.RELAY_DENIED)
        assert (await mx.cmd("DATA"))[0] == 354
        assert (await mx.cmd("Subject: in\r\n\r\nhello\r\n."))[0] == 250
        await mx.cmd("MAIL FROM:<someone@remote.example>")
        await mx.cmd(f"RCPT TO:<{BOB}>")
        await mx.cmd("DATA")
        assert parsed((await mx.cmd("Subject: smuggle\r\n\r\nbare\nlf\r\n."))[1]) == code(replies.BARE_CR_OR_LF)
        # IMAP: a session stays open while we scrape.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port("imap"))
        await reader.readline()
        writer.write(f'a LOGIN "{BOB}" "{PASSWORD}"\r\nb NOOP\r\n'.encode())
        while not (await reader.readline()).startswith(b"b "):
            pass
        # Submission to a remote address: the queue delivers it to the sink.
        client = await _submit(srv.port("submission"), "carol@far.example", "out")
        assert (await client.sendmail(ALICE, ["carol@far.example"], _msg("carol@far.example", "out")))[0] == {}
        await client.quit()
        await until(lambda text: metric(text, "mailserver_deliveries_total", outcome="delivered") == 1, srv)
        text = await srv.metrics()
        assert metric(text, "mailserver_messages_received_total", via="mx") == 1
        assert metric(text, "mailserver_messages_received_total", via="submission") == 1
        assert metric(text, "mailserver_messages_rejected_total", via="mx", reason="unknown_recipient") == 1
        assert metric(text, "mailserver_messages_rejected_total", via="mx", reason="relay_denied") == 1
        assert metric(text, "mailserver_messages_rejected_total", via="mx", reason="bad_line_endings") == 1
        assert metric(text, "mailserver_deliveries_total", outcome="local") == 1
        assert metric(text, "mailserver_delivery_duration_seconds_count", via="mx") == 1
        assert metric(text, "mailserver_smtp_open_sessions", listener="mx") == 1
        assert metric(text, "mailserver_imap_sessions") == 1
        assert metric(text, "mailserver_imap_commands_total", command="LOGIN", result="ok") == 1
        assert metric(text, "mailserver_imap_command_duration_seconds_count", command="NOOP") == 1
        assert metric(text, "mailserver_queue_depth") == 0
        writer.write(b"c LOGOUT\r\n")
        await writer.drain()
        writer.close()
        await mx.close()
        # The SMTP-submitted message is in Alice's sent list, and its status followed the queue.
        r = await srv.http.get("/v1/sent", headers={"Authorization": f"Bearer {srv.token}"})
        (sent,) = r.json()["items"]
        assert sent["subject"] == "out"
        status = (await srv.http.get(f"/v1/messages/{sent['id']}/status",
                                     headers={"Authorization": f"Bearer {srv.token}"})).json()
        assert [(s["recipient"], s["status"]) for s in status["recipients"]] == [("carol@far.example", "delivered")]
        await until(lambda text: metric(text, "mailserver_imap_sessions") == 0, srv)
    finally:
        await sink.stop()
