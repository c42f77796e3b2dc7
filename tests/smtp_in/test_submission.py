"""Submission (587 STARTTLS, 465 implicit TLS) over real sockets: AUTH rules, sender ownership, relay to
the queue, added Message-ID/Date; and swaks, the admin's tool, against both kinds of listener."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from mailcore import replies
from tests.smtp_in.harness import LOCAL, OTHER, PASSWORD, USER, RawClient, Server, make_settings, start_server
from tests.smtp_in.test_mx import code, inbox, parsed

MSG = (b"From: user@local.example\r\nTo: friend@far.example\r\nSubject: out\r\nMessage-ID: <fixed@local.example>"
       b"\r\nDate: Tue, 02 Jan 2024 03:04:05 +0000\r\n\r\nhi\r\n")


def plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


async def submit_client(server: Server, client_tls: ssl.SSLContext, kind: str = "submission",
                        login: bool = True) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port(kind), tls_context=client_tls, timeout=5,
                             use_tls=kind == "submissions", start_tls=None if kind == "submission" else False,
                             local_hostname="laptop.example")
    await client.connect()
    if login:
        await client.login(USER, PASSWORD)
    return client


async def test_auth_refused_before_tls(server: Server) -> None:
    client = await RawClient.connect(server.port("submission"))
    _, ehlo = await client.cmd("EHLO laptop.example")
    assert "AUTH" not in ehlo and "STARTTLS" in ehlo
    assert parsed((await client.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}"))[1]) == code(replies.TLS_REQUIRED)
    assert parsed((await client.cmd(f"MAIL FROM:<{USER}>"))[1]) == code(replies.AUTH_REQUIRED)


async def test_plaintext_auth_on_loopback_when_allowed(pool: asyncpg.Pool, accounts_ids: object,
                                                       tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, allow_plaintext_auth=True), None)
    try:
        client = await RawClient.connect(server.port("submission"))
        assert "AUTH PLAIN LOGIN" in (await client.cmd("EHLO laptop.example"))[1]
        assert parsed((await client.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}"))[1]) == code(replies.AUTH_OK)
    finally:
        await server.stop()


@pytest.mark.both_loops
@pytest.mark.parametrize("kind", ["submission", "submissions"])
async def test_auth_then_relay_goes_to_queue(server: Server, client_tls: ssl.SSLContext, kind: str,
                                             accounts_ids: dict[str, int]) -> None:
    client = await submit_client(server, client_tls, kind)
    errors, _ = await client.sendmail(USER, ["friend@far.example", OTHER], MSG,
                                      rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    await client.quit()
    assert errors == {}
    q = await server.pool.fetchrow("SELECT q.sender, q.account_id, r.recipient, r.domain, r.notify FROM queue q"
                                   " JOIN queue_recipients r ON r.queue_id = q.id")
    assert dict(q) == {"sender": USER, "account_id": accounts_ids[USER], "recipient": "friend@far.example",
                       "domain": "far.example", "notify": "SUCCESS,FAILURE"}
    (local,) = await inbox(server.pool, OTHER)  # local copy delivered in the same transaction
    assert b"with ESMTPSA id" in local and f"(authenticated as {USER})".encode() in local
    assert local.endswith(b"\r\n" + MSG)  # Message-ID and Date present: nothing added
    # Listed in the account's sent messages (for /v1/sent and the status endpoint), via SMTP.
    sent = await server.pool.fetchrow("SELECT account_id, via, recipients FROM sent_messages")
    assert dict(sent) == {"account_id": accounts_ids[USER], "via": "smtp",
                          "recipients": ["friend@far.example", OTHER]}


@pytest.mark.parametrize(("sender", "allowed"), [
    (USER, True),
    ("User@Local.Example", True),
    (f"user+lists@{LOCAL}", True),
    (f"sales@{LOCAL}", True),  # alias whose target is the account
    (f"team@{LOCAL}", True),  # alias with the account among several targets
    (OTHER, False),
    ("anything@catchall.example", False),  # a catch-all is not ownership
    ("someone@far.example", False),
    ("", False),  # the null sender is for bounces, which we generate ourselves
])
async def test_sender_ownership(server: Server, client_tls: ssl.SSLContext, sender: str, allowed: bool) -> None:
    client = await submit_client(server, client_tls)
    try:
        if allowed:
            assert (await client.mail(sender)).code == 250
        else:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
                await client.mail(sender)
            assert (err.value.code, err.value.message.split()[0]) == code(replies.SENDER_NOT_OWNED)
    finally:
        await client.quit()


async def test_message_id_and_date_added_when_missing(server: Server, client_tls: ssl.SSLContext) -> None:
    client = await submit_client(server, client_tls)
    await client.sendmail(USER, [OTHER], b"Subject: bare\r\n\r\nno id\r\n")
    await client.quit()
    (stored,) = await inbox(server.pool, OTHER)
    head = stored.split(b"\r\n\r\n")[0]
    assert head.count(b"\r\nMessage-ID: <") == 1 and head.count(b"\r\nDate: ") == 1
    assert (await server.pool.fetchval("SELECT message_id FROM messages")).endswith("@mx.local.example>")


@pytest.mark.parametrize(("login", "password"), [(USER, "wrong password"), (f"nobody@{LOCAL}", PASSWORD)])
async def test_failed_auth_same_answer(server: Server, client_tls: ssl.SSLContext, login: str, password: str) -> None:
    client = await submit_client(server, client_tls, login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await client.login(login, password)
    assert f"{err.value.code} {err.value.message}" == str(replies.AUTH_FAILED)
    await client.quit()


@pytest.mark.both_loops
async def test_login_mechanism(server: Server, client_tls: ssl.SSLContext) -> None:
    client = await submit_client(server, client_tls, login=False)
    await client.ehlo()
    response = await client.auth_login(USER, PASSWORD)
    assert response.code == 235
    await client.quit()


async def test_lockout_after_failures(pool: asyncpg.Pool, accounts_ids: object, server_tls: ssl.SSLContext,
                                      client_tls: ssl.SSLContext, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, limits={"auth_failures": 3}), server_tls)
    try:
        client = await submit_client(server, client_tls, login=False)
        for _ in range(3):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login(USER, "wrong")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
            await client.login(USER, PASSWORD)  # right password, but locked out for now
        assert (err.value.code, err.value.message.split()[0]) == code(replies.AUTH_TEMPORARILY_LOCKED)
    finally:
        await server.stop()


SWAKS = shutil.which("swaks")


async def swaks(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        SWAKS or "swaks", "--timeout", "5", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode("utf-8", "replace")


@pytest.mark.skipif(SWAKS is None, reason="swaks not installed (apt-get install swaks); CI installs it")
async def test_swaks_mx(server: Server) -> None:
    rc, out = await swaks("--server", "127.0.0.1", "--port", str(server.port("mx")), "--helo", "swaks.example",
                          "--from", "someone@remote.example", "--to", USER, "--header", "Subject: via swaks")
    assert rc == 0, out
    assert "250 2.0.0 message accepted" in out
    (stored,) = await inbox(server.pool, USER)
    assert b"Subject: via swaks" in stored


@pytest.mark.skipif(SWAKS is None, reason="swaks not installed (apt-get install swaks); CI installs it")
async def test_swaks_submission_starttls_auth(server: Server) -> None:
    rc, out = await swaks("--server", "127.0.0.1", "--port", str(server.port("submission")), "--tls",
                          "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
                          "--from", USER, "--to", "friend@far.example")
    assert rc == 0, out
    assert "235 2.7.0" in out and "250 2.0.0 message accepted" in out
    assert await server.pool.fetchval("SELECT recipient FROM queue_recipients") == "friend@far.example"


async def test_a_changed_password_is_never_answered_from_the_login_cache(server: Server,
                                                                        client_tls: ssl.SSLContext) -> None:
    """The second login with the same password may skip argon2 (mailcore.passwords' cache); once the
    password is changed, the old one is refused and the new one accepted, at once."""
    from mailcore.passwords import hash_password
    from storage import accounts

    for _ in range(2):  # the second is answered from the cache
        client = await submit_client(server, client_tls)
        await client.quit()
    await accounts.set_password(server.pool, USER, await hash_password("a new password"))
    client = await submit_client(server, client_tls, login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await client.login(USER, PASSWORD)
    await client.login(USER, "a new password")
    await client.quit()
