"""The MX listener over real sockets with real clients (aiosmtplib, raw bytes) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
import yaml

from mailcore import replies
from tests.smtp_in.harness import LOCAL, OTHER, USER, VICTIM, RawClient, Server, make_settings, start_server

DATA = Path(__file__).parents[1] / "data" / "smtp"
MSG = b"From: a@remote.example\r\nTo: user@local.example\r\nSubject: hello\r\n\r\nbody\r\n"


def code(reply: replies.Reply) -> tuple[int, str]:
    return reply.code, reply.enhanced


def parsed(text: str) -> tuple[int, str]:
    """(code, enhanced code) of a reply line '550 5.1.1 ...'."""
    first = text.splitlines()[-1]
    parts = first.split(" ")
    return int(parts[0][:3]), parts[1] if len(parts) > 1 and parts[1][:1].isdigit() else ""


async def mx_client(server: Server) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=5,
                             local_hostname="client.remote.example")
    await client.connect()
    return client


async def inbox(pool: asyncpg.Pool, address: str, mailbox: str = "INBOX") -> list[bytes]:
    rows = await pool.fetch(
        "SELECT mm.header_prefix || m.raw AS full FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " JOIN mailboxes b ON b.id = mm.mailbox_id JOIN accounts a ON a.id = b.account_id"
        " WHERE a.address = $1 AND b.name = $2 ORDER BY mm.uid", address, mailbox)
    return [bytes(r["full"]) for r in rows]


@pytest.mark.both_loops
@pytest.mark.parametrize(("rcpt", "owner", "delivered_to"), [
    (USER, USER, USER),
    ("User@Local.Example", USER, USER),
    (f"user+tag@{LOCAL}", USER, f"user+tag@{LOCAL}"),
    (f"sales@{LOCAL}", USER, f"sales@{LOCAL}"),
    ("anything@catchall.example", OTHER, "anything@catchall.example"),
    (f"postmaster@{LOCAL}", USER, f"postmaster@{LOCAL}"),  # no postmaster configured: the first account
    ("postmaster", USER, USER),  # bare postmaster, RFC 5321 §4.5.1
])
async def test_local_delivery(server: Server, rcpt: str, owner: str, delivered_to: str) -> None:
    client = await mx_client(server)
    errors, reply = await client.sendmail("a@remote.example", [rcpt], MSG)
    await client.quit()
    assert errors == {} and reply.startswith("2.0.0 message accepted")
    (stored,) = await inbox(server.pool, owner)
    assert stored.startswith(b"Return-Path: <a@remote.example>\r\nDelivered-To: " + delivered_to.encode()
                             + b"\r\nReceived: from client.remote.example ([127.0.0.1])\r\n\tby mx.local.example")
    assert stored.endswith(b"\r\n" + MSG)


async def test_alias_with_remote_target_queues_it(server: Server) -> None:
    client = await mx_client(server)
    await client.sendmail("a@remote.example", [f"team@{LOCAL}"], MSG)
    await client.quit()
    assert len(await inbox(server.pool, USER)) == 1
    assert await server.pool.fetchval("SELECT recipient FROM queue_recipients") == "friend@far.example"


async def test_unknown_user_refused_at_rcpt(server: Server) -> None:
    client = await mx_client(server)
    await client.ehlo()
    await client.mail("a@remote.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await client.rcpt(f"nobody@{LOCAL}")
    assert (err.value.code, err.value.message.split()[0]) == code(replies.MAILBOX_UNAVAILABLE)
    await client.quit()
    assert await server.pool.fetchval("SELECT count(*) FROM messages") == 0


RELAY = yaml.safe_load((DATA / "open-relay-rcpt-forms.yaml").read_text())
SUBST = {"{local}": LOCAL, "{ip}": "127.0.0.1", "{victim}": VICTIM, "{VICTIM_UPPERCASE}": VICTIM.upper()}


def fill(text: str) -> str:
    for key, value in SUBST.items():
        text = text.replace(key, value)
    return text


@pytest.mark.parametrize("mail_from", [fill(m) for m in RELAY["mail_from"]])
async def test_relay_battery_refused(server: Server, mail_from: str) -> None:
    """Every RCPT form of the table, each on a fresh connection, from each sender: never accepted."""
    accepted = []
    for rcpt in (fill(r) for r in RELAY["rcpt_to"]):
        client = await RawClient.connect(server.port("mx"))
        assert (await client.cmd("EHLO probe.example"))[0] == 250
        await client.cmd(f"MAIL FROM:{mail_from}")
        rcode, text = await client.cmd(f"RCPT TO:{rcpt}")
        if rcode < 500:  # 501/503/553/554/555 only: never 250, never a 4xx that invites a retry
            accepted.append((rcpt, text))
        assert (await client.cmd("QUIT"))[0] == 221
        await client.close()
    assert accepted == []
    assert await server.pool.fetchval("SELECT count(*) FROM queue_recipients") == 0


@pytest.mark.parametrize(("commands", "expect"), [
    (["MAIL FROM:<a@remote.example>"], replies.HELO_FIRST),
    (["EHLO x.example", f"RCPT TO:<{USER}>"], replies.NEED_MAIL),
    (["EHLO x.example", "DATA"], replies.NEED_MAIL),
    (["EHLO x.example", "MAIL FROM:<a@remote.example>", "DATA"], replies.NO_VALID_RECIPIENTS),
    (["EHLO x.example", "MAIL FROM:<a@remote.example>", "MAIL FROM:<a@remote.example>"], replies.NESTED_MAIL),
    (["EHLO x.example", f"VRFY {USER}"], replies.CANNOT_VRFY),
    (["EHLO x.example", "VRFY nobody"], replies.CANNOT_VRFY),
    (["EHLO x.example", "EXPN list"], replies.COMMAND_NOT_IMPLEMENTED),
    (["EHLO x.example", "AUTH PLAIN AGZvbwBiYXI="], replies.AUTH_NOT_AVAILABLE),
    (["EHLO x.example", "FOO"], replies.COMMAND_UNRECOGNIZED),
    (["EHLO x.example", "MAIL FROM:<a@remote.example> SIZE=99999999999"], replies.MESSAGE_TOO_BIG),
    (["EHLO x.example", "MAIL FROM:<" + "a" * 2100 + "@remote.example>"], replies.LINE_TOO_LONG),
    (["EHLO x.example", "MAIL FROM:<" + "a" * 600 + "@remote.example>"], replies.MAILBOX_NAME_NOT_ALLOWED),
    (["EHLO x.example", "NOOP " + "x" * 600], replies.LINE_TOO_LONG),
    (["EHLO x.example", "NOOP " + "x" * 20000], replies.LINE_TOO_LONG),
    (["HELO"], replies.SYNTAX_ERROR),
    (["EHLO x.example", "MAIL FROM:<a@remote.example>", f"RCPT TO:<{USER}>", "RSET", "DATA"], replies.NEED_MAIL),
])
async def test_command_replies(server: Server, commands: list[str], expect: replies.Reply) -> None:
    client = await RawClient.connect(server.port("mx"))
    for command in commands[:-1]:
        assert (await client.cmd(command))[0] < 400
    assert parsed((await client.cmd(commands[-1]))[1]) == code(expect)
    assert (await client.cmd("NOOP"))[0] == 250  # still in step
    await client.close()


async def test_ehlo_advertises_what_works(server: Server) -> None:
    client = await RawClient.connect(server.port("mx"))
    _, text = await client.cmd("EHLO x.example")
    keywords = [line[4:] for line in text.splitlines()[1:]]
    assert keywords == ["PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                        "CHUNKING", "DSN", "STARTTLS"]  # no AUTH on the MX


async def test_recipient_limit(pool: asyncpg.Pool, accounts_ids: object, server_tls: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, max_recipients=2), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        await client.cmd("EHLO x.example")
        await client.cmd("MAIL FROM:<a@remote.example>")
        assert (await client.cmd(f"RCPT TO:<{USER}>"))[0] == 250
        assert (await client.cmd(f"RCPT TO:<{OTHER}>"))[0] == 250
        assert parsed((await client.cmd(f"RCPT TO:<sales@{LOCAL}>"))[1]) == code(replies.TOO_MANY_RECIPIENTS)
    finally:
        await server.stop()


async def test_size_limit_enforced_while_receiving(pool: asyncpg.Pool, accounts_ids: object,
                                                    tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, max_message_size=10_000), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        await client.cmd("EHLO x.example")
        await client.cmd("MAIL FROM:<a@remote.example>")  # no SIZE given: found out while receiving
        await client.cmd(f"RCPT TO:<{USER}>")
        assert (await client.cmd("DATA"))[0] == 354
        await client.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 1000
                          + b".\r\n")
        assert parsed((await client.reply())[1]) == code(replies.MESSAGE_TOO_BIG)
        assert (await client.cmd("NOOP"))[0] == 250
        assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    finally:
        await server.stop()


async def test_long_line_in_data_refused(server: Server) -> None:
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example>")
    await client.cmd(f"RCPT TO:<{USER}>")
    await client.cmd("DATA")
    await client.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
    assert parsed((await client.reply())[1]) == code(replies.MESSAGE_LINE_TOO_LONG)
    assert (await client.cmd("NOOP"))[0] == 250


async def test_eight_bit_body_and_smtputf8_address(server: Server, pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE accounts SET address = 'jörg@local.example' WHERE address = $1", OTHER)
    body = "From: a@remote.example\r\nSubject: Grüße\r\n\r\nÄpfel und Öl — ✓\r\n".encode()
    client = await mx_client(server)
    await client.sendmail("jöe@remote.example", ["jörg@local.example"], body,
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    await client.quit()
    (stored,) = await inbox(pool, "jörg@local.example")
    assert stored.endswith(b"\r\n" + body)
    assert "Return-Path: <jöe@remote.example>".encode() in stored
    assert b"with UTF8SMTP id" in stored


async def test_raw_latin1_mime_parameters_are_delivered(server: Server, pool: asyncpg.Pool) -> None:
    # Older mailers write 8-bit Latin-1 filenames unencoded; such a message used to be refused with 451
    # for ever (the part's filename reached PostgreSQL's jsonb as a lone surrogate).
    body = (b"From: a@remote.example\r\nSubject: scan\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: application/pdf; name=\"B\xfccher.pdf\"\r\n"
            b"Content-Disposition: attachm\xe9nt; filename=B\xfccher.pdf\r\n\r\nJVBERi0=\r\n--b--\r\n")
    client = await mx_client(server)
    errors, reply = await client.sendmail("a@remote.example", [USER], body, mail_options=["BODY=8BITMIME"])
    await client.quit()
    assert errors == {} and reply.startswith("2.0.0")
    (stored,) = await inbox(pool, USER)
    assert stored.endswith(b"\r\n" + body)
    parts, structure = await pool.fetchrow("SELECT m.parts, m.bodystructure FROM messages m")
    assert '"filename": "Bücher.pdf"' in parts and '"disposition": "attachmént"' in parts
    assert '("filename" {11}\r\nBücher.pdf)' in structure  # a literal: 8-bit, counted in UTF-8


async def test_dsn_parameters_are_stored_on_queue(server: Server) -> None:
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example> RET=HDRS ENVID=env+2B1")
    assert (await client.cmd(f"RCPT TO:<team@{LOCAL}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;team@{LOCAL}"))[0] == 250
    await client.cmd("DATA")
    await client.send(MSG + b".\r\n")
    assert (await client.reply())[0] == 250
    row = await server.pool.fetchrow("SELECT q.envid, q.ret, r.notify, r.orcpt FROM queue q"
                                     " JOIN queue_recipients r ON r.queue_id = q.id")
    assert dict(row) == {"envid": "env+1", "ret": "HDRS", "notify": "FAILURE,DELAY", "orcpt": f"rfc822;team@{LOCAL}"}


async def test_bdat(server: Server) -> None:
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    part1, part2 = MSG[:30], MSG[30:]
    # Pipelined: MAIL, RCPT, two BDAT chunks in one write (RFC 3030 allows it).
    await client.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{USER}>\r\n".encode()
                      + f"BDAT {len(part1)}\r\n".encode() + part1
                      + f"BDAT {len(part2)} LAST\r\n".encode() + part2)
    codes = [(await client.reply())[0] for _ in range(4)]
    assert codes == [250, 250, 250, 250]
    (stored,) = await inbox(server.pool, USER)
    assert stored.endswith(b"\r\n" + MSG)
    # BDAT without a transaction is refused, but its data is still consumed: we stay in step.
    await client.send("BDAT 5\r\nhelloNOOP\r\n")
    assert parsed((await client.reply())[1]) == code(replies.NEED_MAIL)
    assert (await client.reply())[0] == 250


async def test_bdat_too_big_consumed(pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, max_message_size=100), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        await client.cmd("EHLO x.example")
        await client.cmd("MAIL FROM:<a@remote.example>")
        await client.cmd(f"RCPT TO:<{USER}>")
        await client.send(b"BDAT 200 LAST\r\n" + b"a" * 198 + b"\r\n")
        assert parsed((await client.reply())[1]) == code(replies.MESSAGE_TOO_BIG)
        assert (await client.cmd("NOOP"))[0] == 250
    finally:
        await server.stop()


@pytest.mark.parametrize("size", ["\u00b2", "\u0661", "1\u0660", "+5", "5 MORE"])
async def test_bdat_unreadable_size_closes(server: Server, size: str, caplog: pytest.LogCaptureFixture) -> None:
    """A BDAT size that is not ASCII digits (str.isdigit() takes "²" and "١") is a syntax error and the
    end of the connection (we cannot tell its data from commands): never 451 with a traceback, never a
    chunk read at the size a Unicode digit happens to have."""
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example>")
    await client.cmd(f"RCPT TO:<{USER}>")
    await client.send(f"BDAT {size}\r\nxNOOP\r\n".encode())
    assert parsed((await client.reply())[1]) == code(replies.SYNTAX_ERROR)
    assert await client.more() == b""
    assert "Traceback" not in caplog.text
    assert await inbox(server.pool, USER) == []


SMUGGLING = yaml.safe_load((DATA / "smuggling-eod-variants.yaml").read_text())


@pytest.mark.parametrize("name", sorted(SMUGGLING["variants"]))
async def test_smuggling_live(server: Server, name: str) -> None:
    """One write after 354; exactly one reply to the content; the smuggled MAIL never runs."""
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example>")
    await client.cmd(f"RCPT TO:<{USER}>")
    assert (await client.cmd("DATA"))[0] == 354
    smuggled = SMUGGLING["smuggled"].replace("b@example.net", OTHER)
    wire = (SMUGGLING["header"] + SMUGGLING["body_prefix"] + SMUGGLING["variants"][name]["bytes"]
            + smuggled + "\r\n.\r\n").encode("latin-1")
    await client.send(wire)
    first = await client.reply()
    later = await client.more(0.5)
    stored = await inbox(server.pool, USER)
    if name == "legit":
        # The terminator really ends the message; the rest are (pipelined) commands of the client.
        assert first[0] == 250 and len(stored) == 1
        return
    assert later == b"", f"a second reply means a second transaction: {later!r}"
    assert parsed(first[1]) in (code(replies.BARE_CR_OR_LF), code(replies.NUL_IN_MESSAGE))
    assert stored == [] and await inbox(server.pool, OTHER) == []
    assert (await client.cmd("NOOP"))[0] == 250


@pytest.mark.both_loops
async def test_starttls_injection_discarded(server: Server, client_tls: object) -> None:
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.send("STARTTLS\r\nEHLO injected.example\r\n")
    assert (await client.reply())[0] == 220
    await client.writer.start_tls(client_tls, server_hostname="mx.local.example")  # type: ignore[arg-type]
    # Had the injected EHLO been run, its 250 would be waiting now; the first reply must be to our NOOP.
    assert parsed((await client.cmd("NOOP"))[1]) == code(replies.NOOP_OK)
    assert parsed((await client.cmd(f"MAIL FROM:<a@{VICTIM}>"))[1]) == code(replies.HELO_FIRST)


@pytest.mark.parametrize("after", ["HELO x.example", None])
async def test_unnegotiated_pipelining_refused(server: Server, after: str | None) -> None:
    client = await RawClient.connect(server.port("mx"))
    if after:
        assert (await client.cmd(after))[0] == 250
    await client.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{USER}>\r\nDATA\r\n".encode() + MSG + b".\r\n")
    _, text = await client.reply()
    assert parsed(text) == code(replies.PIPELINING_VIOLATION)
    assert (await client.reply())[0] == 0  # closed
    assert await server.pool.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.both_loops
async def test_pipelined_replies_held_until_the_group_is_done(server: Server) -> None:
    """RFC 2920 §3.1: replies to a pipelined group go out together, once the server needs more input.
    The RCPT's recipient lookup is held up by a table lock, so MAIL's reply, already decided, must not
    have gone out on its own; once the lookup runs, both arrive."""
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    async with server.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        await client.send(f"MAIL FROM:<a@remote.example>\r\nRCPT TO:<{USER}>\r\n")
        held = await client.more(0.5)
    assert held == b"", f"a reply left before the group was answered: {held!r}"
    assert [parsed((await client.reply())[1]) for _ in range(2)] == [code(replies.SENDER_OK),
                                                                      code(replies.RECIPIENT_OK)]
    await client.send("DATA\r\n")
    assert (await client.reply())[0] == 354
    await client.send(MSG + b".\r\nQUIT\r\n")  # the 250 and the 221 leave together, before the close
    assert parsed((await client.reply())[1]) == code(replies.MESSAGE_ACCEPTED)
    assert (await client.reply())[0] == 221
    assert len(await inbox(server.pool, USER)) == 1


async def test_too_many_errors_closes(pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, max_bad_commands=3), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        for _ in range(2):
            assert (await client.cmd("BOGUS"))[0] == 500
        assert (await client.cmd("BOGUS"))[0] == 500
        assert parsed((await client.reply())[1]) == code(replies.TOO_MANY_ERRORS)
        assert (await client.reply())[0] == 0
    finally:
        await server.stop()


async def test_connection_limits(pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, max_connections_per_ip=2), None)
    try:
        a = await RawClient.connect(server.port("mx"))
        b = await RawClient.connect(server.port("submission"))  # the limit spans listeners
        c = await RawClient.connect(server.port("mx"), greet=False)
        assert parsed((await c.reply())[1]) == code(replies.TOO_MANY_CONNECTIONS)
        assert (await c.reply())[0] == 0
        await a.cmd("QUIT")
        await a.close()
        await asyncio.sleep(0.1)
        d = await RawClient.connect(server.port("mx"))
        assert (await d.cmd("NOOP"))[0] == 250
        await b.close()
    finally:
        await server.stop()


@pytest.mark.both_loops
@pytest.mark.parametrize("failure", ["garbage", "close", "silence"])
async def test_failed_starttls_handshake_frees_the_connection_slot(
        pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path, server_tls: ssl.SSLContext, failure: str) -> None:
    """A STARTTLS whose handshake never completes (plaintext garbage, a close, silence until the idle
    timeout) must give back the client's connection slot: asyncio's SSLProtocol never reports such a
    connection lost to the session, and each one used to keep its slot for ever, so
    `max_connections_per_ip` of them locked the address out with 421."""
    server = await start_server(pool, make_settings(tmp_path, max_connections_per_ip=1, idle_timeout=0.5),
                                server_tls)
    try:
        for _ in range(3):
            client = await RawClient.connect(server.port("mx"))
            await client.cmd("EHLO x.example")
            assert (await client.cmd("STARTTLS"))[0] == 220
            if failure == "garbage":
                await client.send(b"NOT A TLS CLIENT HELLO\r\n" * 4)
            elif failure == "close":
                await client.close()
            if failure != "close":
                await asyncio.wait_for(client.reader.read(), 5)  # the server closes
                await client.close()
            await asyncio.sleep(0.1)
        client = await RawClient.connect(server.port("mx"))  # 220, not 421 too many connections
        assert (await client.cmd("NOOP"))[0] == 250
        await client.close()
    finally:
        await server.stop()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the socket (EOF or reset) within `within` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


@pytest.mark.both_loops
async def test_implicit_tls_handshakes_are_capped_and_timed_out(
        pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path, server_tls: ssl.SSLContext,
        client_tls: ssl.SSLContext) -> None:
    """On 465 the session (and its connection slot) starts only once TLS is up; clients that connect and
    never finish the handshake were counted nowhere and each held its socket for asyncio's 60 s. Now
    handshakes in progress count against the SMTP caps apart from sessions, and end after
    server.tls_handshake_timeout."""
    settings = make_settings(tmp_path, max_connections_per_ip=2)
    settings = replace(settings, server=replace(settings.server, tls_handshake_timeout=1.0))
    server = await start_server(pool, settings, server_tls)
    port = server.port("submissions")
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        third = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(third[0], 0.5)  # over the cap: closed at once
        third[1].close()
        for reader, _ in silent:  # never said a word: closed after the handshake timeout
            assert await _closed_by_server(reader, 5.0)
        for _, writer in silent:
            writer.close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls, server_hostname="localhost"), 5)
        client = RawClient(reader, writer)
        assert (await client.reply())[0] == 220  # the slots were given back
        assert (await client.cmd("NOOP"))[0] == 250
        await client.close()
    finally:
        await server.stop()


async def test_idle_timeout(pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path, idle_timeout=0.3), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        assert parsed((await client.reply(2.0))[1]) == code(replies.IDLE_TIMEOUT)
        assert (await client.reply())[0] == 0
    finally:
        await server.stop()


async def test_idle_timer_restarts_with_each_command(pool: asyncpg.Pool, accounts_ids: object,
                                                     tmp_path: Path) -> None:
    """A session that keeps talking outlives its idle timeout many times over (the timer is re-armed,
    if not on every command); once it falls silent, the timeout still ends it."""
    server = await start_server(pool, make_settings(tmp_path, idle_timeout=0.6), None)
    try:
        client = await RawClient.connect(server.port("mx"))
        for _ in range(12):  # 2.4 s of NOOPs, 0.2 s apart
            await asyncio.sleep(0.2)
            assert parsed((await client.cmd("NOOP"))[1]) == code(replies.NOOP_OK)
        assert parsed((await client.reply(5.0))[1]) == code(replies.IDLE_TIMEOUT)
    finally:
        await server.stop()


async def test_store_failure_is_451_without_details(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    await server.pool.execute("ALTER TABLE mailbox_messages RENAME TO mailbox_messages_gone")
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example>")
    await client.cmd(f"RCPT TO:<{USER}>")
    await client.cmd("DATA")
    await client.send(MSG + b".\r\n")
    text = (await client.reply())[1]
    assert text == str(replies.TEMPORARY_FAILURE)  # generic: no exception class, no SQL
    assert "mailbox_messages" in caplog.text  # the cause is in the log
    assert (await client.cmd("NOOP"))[0] == 250
    await server.pool.execute("ALTER TABLE mailbox_messages_gone RENAME TO mailbox_messages")
    assert await server.pool.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.both_loops
async def test_stop_says_421_to_idle_sessions_and_lets_busy_ones_finish(
        pool: asyncpg.Pool, accounts_ids: object, tmp_path: Path) -> None:
    server = await start_server(pool, make_settings(tmp_path), None)
    idle = await RawClient.connect(server.port("mx"))
    busy = await RawClient.connect(server.port("mx"))
    await busy.cmd("EHLO x.example")
    await busy.cmd("MAIL FROM:<a@remote.example>")
    await busy.cmd(f"RCPT TO:<{USER}>")
    assert (await busy.cmd("DATA"))[0] == 354
    await busy.send(MSG[:20])  # in the middle of DATA when the stop comes
    stopping = asyncio.create_task(server.stop())
    assert parsed((await idle.reply())[1]) == code(replies.SERVICE_UNAVAILABLE)
    await busy.send(MSG[20:] + b".\r\n")
    assert (await busy.reply())[0] == 250  # the message in flight was finished and stored
    assert parsed((await busy.reply())[1]) == code(replies.SERVICE_UNAVAILABLE)
    await asyncio.wait_for(stopping, 5)
    assert len(await inbox(pool, USER)) == 1


@pytest.mark.parametrize(("used", "size_hint", "expect"), [
    (0, None, replies.RECIPIENT_OK), (1000, None, replies.MAILBOX_FULL), (0, 2000, replies.MAILBOX_FULL),
])
async def test_quota_at_rcpt(server: Server, used: int, size_hint: int | None, expect: replies.Reply) -> None:
    await server.pool.execute("UPDATE accounts SET quota_bytes = 1000, used_bytes = $2 WHERE address = $1",
                              USER, used)
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO x.example")
    await client.cmd("MAIL FROM:<a@remote.example>" + (f" SIZE={size_hint}" if size_hint else ""))
    assert parsed((await client.cmd(f"RCPT TO:<{USER}>"))[1]) == code(expect)
