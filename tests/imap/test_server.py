"""The listeners over real sockets on loopback: TLS, STARTTLS, IDLE wake-ups, limits, timeouts."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys

import pytest

from tests.imap.conftest import PASSWORD, USER, Listening, World, message, start_listening


class Line:
    """A minimal raw IMAP client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, tls: ssl.SSLContext | None = None) -> Line:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        return cls(r, w)

    async def line(self, within: float = 5) -> str:
        return (await asyncio.wait_for(self.reader.readline(), within)).decode()

    async def cmd(self, text: str) -> list[str]:
        tag = text.split()[0]
        self.writer.write(text.encode() + b"\r\n")
        out = []
        while True:
            line = await self.line()
            out.append(line)
            if line.startswith(tag + " ") or not line:
                return out


def client_tls(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    return ctx


async def test_starttls_then_login(world: World, db_dsn: str, tmp_path: object) -> None:
    srv = await start_listening(world, db_dsn, tmp_path, allow_plaintext_auth=False)
    try:
        c = await Line.open(srv.imap_port)
        greeting = await c.line()
        assert "STARTTLS" in greeting and "LOGINDISABLED" in greeting and "AUTH=PLAIN" not in greeting
        assert "PRIVACYREQUIRED" in (await c.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1]
        assert (await c.cmd("b STARTTLS"))[-1].startswith("b OK")
        await c.writer.start_tls(client_tls(srv.ca_file))
        caps = await c.cmd("c CAPABILITY")
        assert "AUTH=PLAIN" in caps[0] and "STARTTLS" not in caps[0]
        assert (await c.cmd(f'd LOGIN {USER} "{PASSWORD}"'))[-1].startswith("d OK")
        c.writer.close()
    finally:
        await srv.service.stop(1)  # type: ignore[attr-defined]


async def test_implicit_tls(listening: Listening) -> None:
    c = await Line.open(listening.imaps_port, client_tls(listening.ca_file))
    greeting = await c.line()
    assert "AUTH=PLAIN" in greeting and "STARTTLS" not in greeting
    assert (await c.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1].startswith("a OK")
    assert (await c.cmd("b LOGOUT"))[0].startswith("* BYE")


async def idling(port: int) -> Line:
    c = await Line.open(port)
    await c.line()
    await c.cmd(f'a LOGIN {USER} "{PASSWORD}"')
    await c.cmd("b SELECT INBOX")
    c.writer.write(b"i IDLE\r\n")
    assert (await c.line()).startswith("+ ")
    return c


async def test_idle_announces_a_delivery_unasked(listening: Listening) -> None:
    c = await idling(listening.imap_port)
    await listening.world.deliver(message(1))  # another connection, through storage.delivery
    # The client sends nothing: the lines are pushed (the 10 s only guards against a hang).
    assert await c.line(within=10) == "* 1 EXISTS\r\n"
    assert (await c.line(within=10)) == "* 1 RECENT\r\n"
    c.writer.write(b"DONE\r\n")
    assert await c.line() == "i OK IDLE terminated\r\n"
    assert (await c.cmd("n NOOP"))[-1].startswith("n OK")


async def test_idle_sees_flag_changes_and_expunges_from_other_sessions(listening: Listening) -> None:
    await listening.world.deliver(message(1))
    await listening.world.deliver(message(2))
    c = await idling(listening.imap_port)
    other = await listening.world.client()
    await other("s SELECT INBOX")
    await other("a STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert await c.line(within=1) == "* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    await other("b EXPUNGE")
    assert await c.line(within=1) == "* 2 EXPUNGE\r\n"


@pytest.mark.parametrize("command", ["FETCH 1 (FLAGS)", "UID FETCH 1:* (UID)", "SEARCH ALL", "NOOP"])
async def test_a_client_that_only_reads_still_learns_of_new_mail(listening: Listening, command: str) -> None:
    """After FETCH and SEARCH the store is asked for changes only once a notification came: a delivery
    (another connection) is announced by the first such command after its notification; NOOP always asks."""
    await listening.world.deliver(message(1))
    c = await Line.open(listening.imap_port)
    await c.line()
    await c.cmd(f'a LOGIN {USER} "{PASSWORD}"')
    await c.cmd("b SELECT INBOX")
    assert "* 2 EXISTS\r\n" not in await c.cmd(f"c {command}")
    await listening.world.deliver(message(2))
    for i in range(100):  # the notification arrives shortly after the commit
        out = await c.cmd(f"d{i} {command}")
        assert out[-1].startswith(f"d{i} OK")
        if "* 2 EXISTS\r\n" in out:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"{command}: the new message was never announced")
    assert "* 2 EXISTS\r\n" not in await c.cmd(f"e {command}")  # once


DELIVER_SCRIPT = """
import asyncio, sys
import asyncpg
from mailcore.mime.precompute import summarize
from storage.delivery import Delivery, LocalRecipient

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    pool = await asyncpg.create_pool(sys.argv[1], min_size=1, max_size=1)
    raw = b"From: a@example.org\\r\\nSubject: from another process\\r\\n\\r\\nbody\\r\\n"
    d = Delivery(sender="a@example.org")
    d.add_local(LocalRecipient(int(sys.argv[2]), "alice@example.test"))
    await d.commit(pool, raw, summarize(raw))
    await pool.close(); await conn.close()

asyncio.run(main())
"""


async def test_idle_sees_a_delivery_from_another_process(listening: Listening, db_dsn: str) -> None:
    c = await idling(listening.imap_port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DELIVER_SCRIPT, db_dsn, str(listening.world.account_id),
        cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert await c.line(within=10) == "* 1 EXISTS\r\n"  # pushed; the 10 s only guards against a hang


async def test_connections_per_account_and_address_are_limited(world: World, db_dsn: str,
                                                               tmp_path: object) -> None:
    srv = await start_listening(world, db_dsn, tmp_path, max_connections_per_user=2)
    try:
        clients = []
        for tag in ("a", "b", "c"):
            c = await Line.open(srv.imap_port)
            await c.line()
            clients.append((c, (await c.cmd(f'{tag} LOGIN {USER} "{PASSWORD}"'))[-1]))
        assert [r.split()[1] for _, r in clients] == ["OK", "OK", "NO"]
        assert "[LIMIT]" in clients[2][1]
        clients[0][0].writer.close()
        await asyncio.sleep(0.2)
        assert (await clients[2][0].cmd(f'd LOGIN {USER} "{PASSWORD}"'))[-1].startswith("d OK")
    finally:
        await srv.service.stop(1)  # type: ignore[attr-defined]


async def test_connections_per_address_and_in_all_are_limited(world: World, db_dsn: str,
                                                              tmp_path: object) -> None:
    """Every connection counts, logged in or not (there was no cap at all before login): beyond
    imap.max_connections_per_ip, or max_connections over both listeners, the greeting is
    BYE [UNAVAILABLE] (RFC 9051 §7.1.5) and the connection closes; a slot given back admits again."""
    for limits in ({"max_connections_per_ip": 2}, {"max_connections": 2}):
        srv = await start_listening(world, db_dsn, tmp_path, **limits)
        try:
            first = await Line.open(srv.imap_port)
            assert (await first.line()).startswith("* OK")
            second = await Line.open(srv.imaps_port, client_tls(srv.ca_file))  # the caps span listeners
            assert (await second.line()).startswith("* OK")
            third = await Line.open(srv.imap_port)
            assert (await third.line()).startswith("* BYE [UNAVAILABLE]")
            assert await third.line() == ""
            assert (await first.cmd("a LOGOUT"))[-1].startswith("a OK")
            await asyncio.sleep(0.2)
            fourth = await Line.open(srv.imap_port)
            assert (await fourth.line()).startswith("* OK")
            for c in (second, fourth):
                c.writer.close()
        finally:
            await srv.service.stop(1)  # type: ignore[attr-defined]


async def test_login_timeout_is_shorter_than_the_session_one(world: World, db_dsn: str, tmp_path: object) -> None:
    """A connection that never logs in is ended imap.login_timeout after it opened, silent or chatty
    (NOOPs, or a byte now and then, do not buy time); once logged in, the (RFC 9051 §5.4: 30 minutes
    at least) inactivity timeout applies instead."""
    srv = await start_listening(world, db_dsn, tmp_path, login_timeout=1.0, idle_timeout=30.0)
    try:
        silent = await Line.open(srv.imap_port)
        await silent.line()
        chatty = await Line.open(srv.imap_port)
        await chatty.line()
        user = await Line.open(srv.imap_port)
        await user.line()
        assert (await user.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1].startswith("a OK")
        for n in range(4):  # 1.2 s of NOOPs, each well within the timeout of the one before
            await asyncio.sleep(0.3)
            reply = await chatty.cmd(f"n{n} NOOP")
            if reply[-1].startswith("* BYE") or not reply[-1]:
                break
        else:
            raise AssertionError("a client that never logged in outlived login_timeout")
        assert (await silent.line(within=5)).startswith("* BYE")
        await asyncio.sleep(0.5)
        assert (await user.cmd("b NOOP"))[-1].startswith("b OK")
        user.writer.close()
    finally:
        await srv.service.stop(1)  # type: ignore[attr-defined]


async def test_implicit_tls_handshakes_are_capped_and_timed_out(world: World, db_dsn: str,
                                                                tmp_path: object) -> None:
    """On 993 the session starts (and counts itself) only once TLS is up: sockets that never finish
    the handshake were counted nowhere and each lasted asyncio's 60 s. Handshakes in progress now
    count against the IMAP caps apart from sessions, and end after server.tls_handshake_timeout."""
    import dataclasses

    from config.settings import ListenerSettings
    from imap.server import IMAPService
    from tests.imap.conftest import make_settings, tls_pair

    ctx, ca_file = tls_pair(tmp_path)
    loop = ListenerSettings(enabled=True, address="127.0.0.1", port=0)
    settings = make_settings(imap=loop, imaps=loop, max_connections_per_ip=2)
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, tls_handshake_timeout=1.0))
    service = IMAPService(settings, world.pool, db_dsn, ctx)  # type: ignore[arg-type]
    await service.start()
    port = service.ports["imaps"]
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 0.5) == b""  # over the cap: closed at once
        writer.close()
        for reader, _ in silent:  # closed once the handshake timeout has passed
            assert await asyncio.wait_for(reader.read(), 5) == b""
        for _, writer in silent:
            writer.close()
        await asyncio.sleep(0.1)
        c = await Line.open(port, client_tls(ca_file))
        assert (await c.line()).startswith("* OK")  # the handshake slots were given back
        c.writer.close()
    finally:
        await service.stop(1)


async def test_inactivity_timeout_says_bye(world: World, db_dsn: str, tmp_path: object) -> None:
    srv = await start_listening(world, db_dsn, tmp_path, idle_timeout=0.3)
    try:
        c = await Line.open(srv.imap_port)
        await c.line()
        assert (await c.cmd(f'a LOGIN {USER} "{PASSWORD}"'))[-1].startswith("a OK")
        assert (await c.line(within=3)).startswith("* BYE")
        assert await c.line(within=3) == ""
    finally:
        await srv.service.stop(1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("garbage", [b"\x00\xff\r\n", b"a" * 70000 + b"\r\n", b"a LOGIN {99999999}\r\n"])
async def test_garbage_gets_bad_and_the_session_survives(listening: Listening, garbage: bytes) -> None:
    c = await Line.open(listening.imap_port)
    await c.line()
    c.writer.write(garbage)
    assert "BAD" in await c.line()
    assert (await c.cmd("z NOOP"))[-1].startswith("z OK")
