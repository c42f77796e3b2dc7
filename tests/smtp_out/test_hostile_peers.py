"""Hostile and broken remote MTAs (a raw server on loopback, `tests.sinks.RawMTA`), driven through the real
worker: every misbehaviour ends as a clear deferral or bounce, with a clean one-line reason, within the
timeouts, without an exception out of the worker and without losing or duplicating the message."""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
import pytest

from mailcore.dsn import MAX_FIELD
from smtp_out import client
from smtp_out.worker import Outbound
from tests.sinks import RawMTA
from tests.smtp_out.conftest import Clock, inbox, outbound, settings, submit

# What must never reach a kept reply or a DSN from a peer: C0, DEL, C1, line separators, lone surrogates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


async def _attempt(pool: asyncpg.Pool, clock: Clock, server: RawMTA, caplog: pytest.LogCaptureFixture,
                   qid: int) -> asyncpg.Record | None:
    """One worker pass (bounded well under the test's patience) and the recipient's row afterwards."""
    caplog.set_level(logging.INFO)
    ob = outbound(pool, clock, transports={"far.example": f"smtp://127.0.0.1:{server.port}"},
                  connect_timeout=1, command_timeout=1, data_timeout=1)
    async with asyncio.timeout(10):
        assert await ob.run_once() == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    return await pool.fetchrow("SELECT status, status_code, last_error FROM queue_recipients WHERE queue_id=$1",
                               qid)


def _dsn_lines(raw: bytes) -> list[str]:
    return [line for line in raw.decode("utf-8").split("\r\n")
            if line.startswith(("Diagnostic-Code:", "Status:", "Remote-MTA:", "    "))]


@pytest.mark.parametrize(("replies", "status_code", "reason"), [
    # A reply that is not the step's: the message was never sent, so it is not delivered (250 to DATA
    # used to be taken for the 250 to the message's end: the entry was dropped as delivered, unsent).
    ({"DATA": b"250 2.0.0 ok\r\n"}, "4.5.0", "250 2.0.0 ok"),
    ({"DATA": b"221 bye\r\n"}, "4.5.0", "221 bye"),
    ({"MAIL": b"354 go ahead\r\n", "DATA": b"250 ok\r\n"}, "4.5.0", "354 go ahead"),  # out of order
    ({"RCPT": b"252 cannot verify\r\n", "DATA": b"554 no recipients\r\n"}, "4.5.0", "252 cannot verify"),
    ({".": b"354 more?\r\n"}, "4.5.0", "354 more?"),
    # Codes outside 2xx-5xx: an RFC 3463 status, not "6.0.0", "1.0.0" or "-.0.0".
    ({"GREETING": b"600 hi\r\n"}, "4.5.0", "600 hi"),
    ({"GREETING": b"199 hi\r\n"}, "4.5.0", "199 hi"),
    ({"GREETING": b"-12 hi\r\n"}, "4.5.0", "hi"),
    ({"GREETING": b"abc hi\r\n"}, "4.5.0", "Malformed SMTP response line: abc hi"),
    ({"EHLO": b"250 " + b"x" * 1_000_000 + b"\r\n"}, "4.5.0", "Response too long"),
    # A refused greeting defers (another host, another time): a temporary status, not "451 5.7.1 ...".
    ({"GREETING": b"554 5.7.1 you are blocked\r\n"}, "4.7.1", "554 5.7.1 you are blocked"),
    ({"GREETING": b"554 no\r\n"}, "4.0.0", "554 no"),
    # Controls and undecodable bytes from the peer: used to fail the worker's own write (PostgreSQL
    # refuses NUL, asyncpg a lone surrogate), leaving the entry leased and unrecorded.
    ({"GREETING": b"421 4.3.2 no\x00way \x1b[31mred\r\n"}, "4.3.2", "421 4.3.2 no way [31mred"),
    ({"GREETING": b"421 caf\xe9 \xff\r\n"}, "4.0.0", "421 caf\ufffd \ufffd"),
    ({"GREETING": b"2\x0020 hi\r\n"}, "4.5.0", "Malformed SMTP response line: 2 20 hi"),
    ({"EHLO": b"451 4.3.0 no\x00 \x1b[2J\r\n"}, "4.3.0", "451 4.3.0 no [2J"),
    ({"MAIL": b"451 4.3.0 busy\x00\x1b[0m\r\n", "RCPT": b"503 MAIL first\r\n"}, "4.3.0", "451 4.3.0 busy [0m"),
    ({"RCPT": "450 4.2.0 \x1b[31mfull\x9b1m\u2028x\r\n".encode()}, "4.2.0", "450 4.2.0 [31mfull 1m x"),
])
async def test_misbehaving_replies_defer_with_a_clean_reason(pool: asyncpg.Pool, ours: int, clock: Clock, mta,
                                                             caplog, replies: dict, status_code: str,
                                                             reason: str) -> None:
    server = await mta(replies=replies)
    qid = await submit(pool, "r@far.example")
    row = await _attempt(pool, clock, server, caplog, qid)
    assert row is not None and row["status"] == "deferred"
    assert row["status_code"] == status_code
    assert row["last_error"].endswith(reason) and not UNSAFE.search(row["last_error"])
    assert server.delivered == []


@pytest.mark.parametrize(("replies", "status_code", "diagnostic"), [
    # A refusal stays a refusal when the server hangs up after it (it used to become a 4.4.2 deferral,
    # retried until the entry expired).
    ({"MAIL": b"550 5.7.1 go away\r\n", "RCPT": "close"}, "5.7.1", "550 5.7.1 go away"),
    ({"RCPT": b"550 5.1.1 unknown\r\n", "DATA": "close"}, "5.1.1", "550 5.1.1 unknown"),
    ({"RCPT": b"550 5.1.1 unknown\r\n", "DATA": b"554 no valid recipients\r\n", "RSET": "close"}, "5.1.1",
     "550 5.1.1 unknown"),
    # Controls, C1 and undecodable bytes never reach the DSN.
    ({"RCPT": "550 5.1.1 a\x85b\u2028c\x9b[31m\x00d\x1b\r\n".encode()}, "5.1.1", "550 5.1.1 a b c [31m d"),
    ({"RCPT": b"550 5.1.1 \xff\xfe\r\n"}, "5.1.1", "550 5.1.1 \ufffd\ufffd"),
])
async def test_refusals_bounce_with_a_clean_dsn(pool: asyncpg.Pool, ours: int, clock: Clock, mta, caplog,
                                                replies: dict, status_code: str, diagnostic: str) -> None:
    server = await mta(replies=replies)
    qid = await submit(pool, "r@far.example")
    assert await _attempt(pool, clock, server, caplog, qid) is None  # bounced: the entry is done
    (raw,) = await inbox(pool)
    lines = _dsn_lines(raw)
    assert f"Status: {status_code}" in lines and f"Diagnostic-Code: smtp;{diagnostic}" in lines
    assert not any(UNSAFE.search(line) for line in lines)
    assert server.delivered == []


@pytest.mark.parametrize("reply", [
    b"550 5.1.1 " + b"\xff" * 2000 + b"\r\n",                   # each becomes U+FFFD, three octets
    b"550 5.1.1 " + "\u00e9".encode() * 1000 + b"\r\n",  # UTF-8 (RFC 6531 replies): two each
], ids=["undecodable", "utf8"])
async def test_an_8bit_refusal_bounces_with_dsn_lines_under_998_octets(pool: asyncpg.Pool, ours: int,
                                                                        clock: Clock, mta, caplog,
                                                                        reply: bytes) -> None:
    # The reply was cut at 900 characters, not octets: a 2,722-octet Diagnostic-Code line (RFC 5322 §2.1.1).
    server = await mta(replies={"RCPT": reply})
    qid = await submit(pool, "r@far.example")
    assert await _attempt(pool, clock, server, caplog, qid) is None
    (raw,) = await inbox(pool)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert any(line.startswith("Diagnostic-Code: smtp;550 5.1.1 ") for line in _dsn_lines(raw))


async def test_a_long_multiline_reply_is_kept_short(pool: asyncpg.Pool, ours: int, clock: Clock, mta,
                                                    caplog) -> None:
    # 99 continuation lines of 8,000 octets pass the reader's limits; ~800 KB went into last_error.
    server = await mta(replies={"RCPT": (b"450-" + b"y" * 8000 + b"\r\n") * 99 + b"450 4.2.0 end\r\n"})
    qid = await submit(pool, "r@far.example")
    row = await _attempt(pool, clock, server, caplog, qid)
    assert row is not None and row["status"] == "deferred" and row["status_code"] == "4.0.0"
    assert len(row["last_error"]) <= MAX_FIELD


@pytest.mark.parametrize("after_dot", [b"421 4.4.2 closing\r\n", "close", "stall"])
async def test_no_answer_to_the_message_defers_and_the_retry_delivers_once(
        pool: asyncpg.Pool, ours: int, clock: Clock, mta, caplog, after_dot: bytes | str) -> None:
    server = await mta(per_connection={0: {".": after_dot}})
    qid = await submit(pool, "r@far.example")
    row = await _attempt(pool, clock, server, caplog, qid)
    assert row is not None and row["status"] == "deferred" and row["status_code"].startswith("4.")
    clock.advance(3600)
    assert await _attempt(pool, clock, server, caplog, qid) is None
    assert len(server.delivered) == 1 and server.connections == 2


@pytest.mark.parametrize("quit_reply", [b"421 4.3.0 go away\r\n", b"550 what\r\n", "close", "stall"])
async def test_a_bad_answer_to_quit_after_250_is_not_resent(pool: asyncpg.Pool, ours: int, clock: Clock, mta,
                                                            caplog, quit_reply: bytes | str) -> None:
    server = await mta(replies={"QUIT": quit_reply})
    qid = await submit(pool, "r@far.example")
    assert await _attempt(pool, clock, server, caplog, qid) is None
    clock.advance(3600)
    ob = outbound(pool, clock, transports={"far.example": f"smtp://127.0.0.1:{server.port}"})
    assert await ob.run_once() == 0
    assert len(server.delivered) == 1 and server.connections == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_reply_too_many_on_a_reused_session_does_not_pass_for_delivery(
        pool: asyncpg.Pool, ours: int, clock: Clock, mta, pipelining: bool) -> None:
    # The server answers the first message's end twice. On the reused session every later reply is one
    # step late, and DATA is answered by RCPT's 250: the second message was dropped as delivered, unsent.
    server = await mta(replies={".": b"250 2.0.0 queued\r\n250 2.0.0 one too many\r\n"},
                       extensions=[b"8BITMIME"] + ([b"PIPELINING"] if pipelining else []))
    sessions = client.SessionCache(idle=30)
    ob = Outbound(pool, settings(transports={"far.example": f"smtp://127.0.0.1:{server.port}"},
                                 command_timeout=1, data_timeout=1), clock=clock, sessions=sessions)
    await submit(pool, "a@far.example")
    second = await submit(pool, "b@far.example")
    try:
        assert await ob.run_once() == 2
        row = await pool.fetchrow("SELECT status, status_code FROM queue_recipients WHERE queue_id=$1", second)
        assert (row["status"], row["status_code"]) == ("deferred", "4.5.0")
        assert len(server.delivered) == 1
        clock.advance(3600)
        assert await ob.run_once() == 1  # a new session: delivered now, once
        assert [m.count(b"Message-ID") for m in server.delivered] == [1, 1]
        assert await pool.fetchval("SELECT count(*) FROM queue") == 0
    finally:
        await sessions.close()


@pytest.mark.parametrize(("ehlo", "status", "helo_sent"), [
    (b"502 5.5.1 command not implemented\r\n", None, True),   # an old server: HELO, then delivered
    (b"500 what?\r\n", None, True),
    (b"421 4.3.2 busy\r\n", "deferred", False),                 # busy is busy: no HELO, try later
])
async def test_a_server_refusing_ehlo_gets_helo(pool: asyncpg.Pool, ours: int, clock: Clock, mta, caplog,
                                                ehlo: bytes, status: str | None, helo_sent: bool) -> None:
    server = await mta(replies={"EHLO": ehlo})
    qid = await submit(pool, "r@far.example")
    row = await _attempt(pool, clock, server, caplog, qid)
    assert (row["status"] if row else None) == status
    assert len(server.delivered) == (1 if status is None else 0)
    assert any(c.startswith(b"HELO ") for c in server.commands) == helo_sent
