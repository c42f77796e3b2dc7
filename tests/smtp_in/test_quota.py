"""An account's quota checked against the message's real size at the end of DATA/BDAT, over real sockets
with smtplib: with and without the MAIL SIZE= hint, two deliveries racing for the last bytes, and a
message for several recipients of which some are full (delivered to the others, a DSN to the sender)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl

import asyncpg
import dkim
import dns.resolver
import pytest

from mailcore import replies
from mailcore.auth.dkim import generate_key
from storage import dkim_keys
from tests.dnsserver import DNSTestServer
from tests.smtp_in.harness import OTHER, PASSWORD, USER, RawClient, Server
from tests.smtp_in.test_mx import code, inbox, parsed

SENDER = "a@remote.example"
MSG = b"From: a@remote.example\r\nTo: user@local.example\r\nSubject: quota\r\n\r\n" + b"x" * 400 + b"\r\n"
# What the MX adds in front of a message (Received): more than this, always.
OURS = 100


def _session(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.remote.example", timeout=10)
    client.ehlo()
    return client


def _send(port: int, sender: str, rcpts: list[tuple[str, list[str]]], *, mail_options: list[str] = (),
          msg: bytes = MSG) -> tuple[int, bytes]:
    """MAIL (with `mail_options` only: smtplib's sendmail would add SIZE= itself), RCPT each, DATA;
    the reply to DATA's end."""
    client = _session(port)
    try:
        assert client.mail(sender, list(mail_options))[0] == 250
        for rcpt, options in rcpts:
            assert client.rcpt(rcpt, options)[0] == 250
        return client.data(msg)
    finally:
        client.quit()


def _reply(result: tuple[int, bytes]) -> tuple[int, str]:
    return parsed(f"{result[0]} {result[1].decode()}")


async def _quota(pool: asyncpg.Pool, address: str, quota: int, used: int) -> None:
    await pool.execute("UPDATE accounts SET quota_bytes = $2, used_bytes = $3 WHERE address = $1", address, quota, used)


async def _used(pool: asyncpg.Pool, address: str) -> int:
    return await pool.fetchval("SELECT used_bytes FROM accounts WHERE address = $1", address)


async def _dsns(pool: asyncpg.Pool) -> list[tuple[str, str, bytes]]:
    """Every DSN queued: (envelope sender, recipient, message)."""
    rows = await pool.fetch("SELECT q.sender, r.recipient, m.raw FROM queue q JOIN queue_recipients r"
                            " ON r.queue_id = q.id JOIN messages m ON m.id = q.message_id"
                            " WHERE m.raw LIKE '%message/delivery-status%' ORDER BY q.id")
    return [(r["sender"], r["recipient"], bytes(r["raw"])) for r in rows]


@pytest.mark.parametrize("mail_options", [
    [],  # no SIZE= (swaks, some MTAs): the RCPT check cannot know, only the end of DATA can
    [f"SIZE={len(MSG)}"],  # an honest hint that fits: our Received header does not
    ["SIZE=10"],  # a hint that lies
])
async def test_one_recipient_over_quota_gets_552_after_data(server: Server, mail_options: list[str]) -> None:
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    result = await asyncio.to_thread(_send, server.port("mx"), SENDER, [(USER, [])], mail_options=mail_options)
    # Dovecot's LMTP answer with its default quota_full_tempfail = no: permanent (RFC 3463 5.2.2).
    assert _reply(result) == code(replies.QUOTA_EXCEEDED) == (552, "5.2.2")
    assert await inbox(server.pool, USER) == []
    assert await _used(server.pool, USER) == 1000 - len(MSG)
    assert await server.pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await _dsns(server.pool) == []  # refused, not accepted: the client tells its sender


async def test_bdat_over_quota_gets_552(server: Server) -> None:
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO client.remote.example")
    await client.cmd(f"MAIL FROM:<{SENDER}>")
    await client.cmd(f"RCPT TO:<{USER}>")
    await client.send(f"BDAT {len(MSG)} LAST\r\n".encode() + MSG)
    assert parsed((await client.reply())[1]) == code(replies.QUOTA_EXCEEDED)
    await client.close()
    assert await inbox(server.pool, USER) == []


async def test_a_message_that_fits_is_counted(server: Server) -> None:
    await _quota(server.pool, USER, 10_000, 0)
    assert (await asyncio.to_thread(_send, server.port("mx"), SENDER, [(USER, [])]))[0] == 250
    (stored,) = await inbox(server.pool, USER)
    size = await server.pool.fetchval("SELECT size FROM messages")
    assert size > len(MSG) + OURS and await _used(server.pool, USER) == size


async def _measure(server: Server) -> int:
    """The stored size of MSG from this client (Received included), by delivering it to OTHER."""
    assert (await asyncio.to_thread(_send, server.port("mx"), SENDER, [(OTHER, [])]))[0] == 250
    return await server.pool.fetchval("SELECT max(size) FROM messages")


def _open_transaction(port: int) -> smtplib.SMTP:
    client = _session(port)
    assert client.mail(SENDER)[0] == 250
    assert client.rcpt(USER)[0] == 250
    return client


def _data(client: smtplib.SMTP) -> tuple[int, bytes]:
    try:
        return client.data(MSG)
    finally:
        client.quit()


async def test_two_deliveries_that_fit_alone_but_not_together_store_one(server: Server) -> None:
    size = await _measure(server)
    await _quota(server.pool, USER, size * 3 // 2, 0)  # room for one, not for two
    port = server.port("mx")
    # Both transactions pass RCPT (nothing is used yet), then both end their DATA at once.
    first, second = await asyncio.gather(asyncio.to_thread(_open_transaction, port),
                                         asyncio.to_thread(_open_transaction, port))
    results = await asyncio.gather(asyncio.to_thread(_data, first), asyncio.to_thread(_data, second))
    assert sorted(_reply(r)[0] for r in results) == [250, 552]
    assert len(await inbox(server.pool, USER)) == 1
    assert await _used(server.pool, USER) <= size * 3 // 2


@pytest.mark.parametrize(("sender", "notify", "dsn"), [
    (SENDER, [], True),
    (SENDER, ["NOTIFY=FAILURE"], True),
    (SENDER, ["NOTIFY=NEVER"], False),  # RFC 3461 §4.1
    ("", [], False),  # never a DSN to the null sender (RFC 3461 §6.2)
])
async def test_several_recipients_some_full_deliver_to_the_others_and_tell_the_sender(
        server: Server, sender: str, notify: list[str], dsn: bool) -> None:
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    rcpts = [(USER, ["ORCPT=rfc822;user@local.example", *notify]), (OTHER, [])]
    result = await asyncio.to_thread(_send, server.port("mx"), sender, rcpts)
    assert _reply(result) == (250, "2.0.0")  # one reply for all: delivered to OTHER
    assert len(await inbox(server.pool, OTHER)) == 1
    assert await inbox(server.pool, USER) == []
    assert await _used(server.pool, USER) == 1000 - len(MSG)
    dsns = await _dsns(server.pool)
    if not dsn:
        assert dsns == []
        return
    ((dsn_sender, to, raw),) = dsns
    assert (dsn_sender, to) == ("", SENDER)
    assert b"Action: failed" in raw and b"Status: 5.2.2" in raw
    assert b"Final-Recipient: rfc822;user@local.example" in raw
    assert b"Diagnostic-Code: smtp;552 5.2.2" in raw
    assert b"Final-Recipient: rfc822;other@local.example" not in raw


async def test_the_dsn_for_a_full_recipient_is_signed_for_the_host_name(server: Server) -> None:
    """The DSN's From is MAILER-DAEMON@<server.hostname> (mx.local.example): with a key for local.example,
    its parent, the DSN leaves signed and aligned, as the queue's own bounces do (`smtp_out.bounce`),
    and a remote verifier, asking its DNS (here a loopback server), finds it valid."""
    pem, txt = generate_key("ed25519")
    await dkim_keys.add_key(server.pool, "local.example", "s1", pem, "ed25519-sha256")
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    result = await asyncio.to_thread(_send, server.port("mx"), SENDER, [(USER, []), (OTHER, [])])
    assert _reply(result) == (250, "2.0.0")
    ((_sender, to, raw),) = await _dsns(server.pool)
    assert to == SENDER and raw.startswith(b"DKIM-Signature:") and b" d=local.example;" in raw.split(b"\r\n\r\n")[0]
    world = DNSTestServer({"s1._domainkey.local.example": {"TXT": [txt]}}).start()
    try:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [world.host], world.port

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout, tcp=True)
            return b"".join(answer[0].strings)  # type: ignore[attr-defined]

        assert await asyncio.to_thread(dkim.verify, raw, dnsfunc=dnsfunc)
    finally:
        world.stop()


async def test_all_local_recipients_full_and_none_remote_gets_552(server: Server) -> None:
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    await _quota(server.pool, OTHER, 1000, 1000 - len(MSG))
    result = await asyncio.to_thread(_send, server.port("mx"), SENDER, [(USER, []), (OTHER, [])])
    assert _reply(result) == code(replies.QUOTA_EXCEEDED)
    assert await server.pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await _dsns(server.pool) == []


async def test_a_full_alias_target_with_a_remote_one_is_queued_and_bounced(server: Server) -> None:
    """team@ goes to USER (full) and to a remote address: the remote copy is queued, USER's bounced."""
    await _quota(server.pool, USER, 1000, 1000 - len(MSG))
    result = await asyncio.to_thread(_send, server.port("mx"), SENDER, [("team@local.example", [])])
    assert result[0] == 250
    assert await inbox(server.pool, USER) == []
    queued = await server.pool.fetch("SELECT q.sender, r.recipient FROM queue q JOIN queue_recipients r"
                                     " ON r.queue_id = q.id ORDER BY q.id")
    assert [(r["sender"], r["recipient"]) for r in queued] == [(SENDER, "friend@far.example"), ("", SENDER)]


def _submit(port: int, client_tls: ssl.SSLContext, rcpts: list[str]) -> tuple[int, bytes]:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="laptop.example", timeout=10)
    try:
        client.starttls(context=client_tls)
        client.login(USER, PASSWORD)
        client.mail(USER)
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(MSG)
    finally:
        client.quit()


async def test_submission_to_a_full_local_user_bounces_into_the_senders_inbox(
        server: Server, client_tls: ssl.SSLContext) -> None:
    await _quota(server.pool, OTHER, 1000, 1000 - len(MSG))
    result = await asyncio.to_thread(_submit, server.port("submission"), client_tls, [OTHER, "friend@far.example"])
    assert result[0] == 250
    assert await inbox(server.pool, OTHER) == []
    (bounce,) = await inbox(server.pool, USER)
    assert bounce.startswith(b"Return-Path: <>\r\n")
    assert b"Final-Recipient: rfc822;other@local.example" in bounce and b"Status: 5.2.2" in bounce
    assert await server.pool.fetchval("SELECT recipient FROM queue_recipients") == "friend@far.example"
