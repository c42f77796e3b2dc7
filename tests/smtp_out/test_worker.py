"""Outbound delivery through per-domain transports to real aiosmtpd sinks, over a real PostgreSQL.

Time is moved with the `clock` fixture; nothing sleeps to wait for a retry."""

from __future__ import annotations

import email
import email.policy

import asyncpg

from storage.delivery import RemoteRecipient
from tests.smtp_out.conftest import SENDER, Clock, inbox, outbound, submit, to_sink


def _dsn(raw: bytes) -> tuple[email.message.EmailMessage, list]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    status = list(msg.iter_parts())[1]
    payload = status.get_payload()
    if status.get_content_type() == "message/global-delivery-status":
        # RFC 6533: the email package does not know this type; split its blocks by hand.
        text = status.as_bytes().decode("utf-8").replace("\r\n", "\n").split("\n\n", 1)[1]
        payload = [email.message_from_string(block.strip() + "\n", policy=email.policy.default)
                   for block in text.split("\n\n") if block.strip()]
    return msg, payload


async def test_delivers_via_transport_and_forgets_the_entry(pool: asyncpg.Pool, ours: int, sinks,
                                                          clock: Clock) -> None:
    sink = await sinks()
    await submit(pool, "r@far.example", "s@far.example")
    ob = outbound(pool, clock, transports=to_sink(sink))
    assert await ob.run_once() == 1
    assert len(sink.received) == 1  # one connection, one transaction for both recipients
    got = sink.received[0]
    assert got.mail_from == SENDER and got.rcpt_tos == ["r@far.example", "s@far.example"]
    assert got.helo == "mx.ours.example"
    assert b"Subject: hello" in got.data
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0  # nothing else pointed at it
    events = await pool.fetch("SELECT recipient, event FROM delivery_log ORDER BY id")
    assert [tuple(e) for e in events][-2:] == [("r@far.example", "delivered"), ("s@far.example", "delivered")]
    assert await inbox(pool) == []  # no DSN unless asked for


async def test_tempfail_then_success_after_retry(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks(rcpt={"r@far.example": "451 4.2.0 greylisted"})
    qid = await submit(pool, "r@far.example")
    ob = outbound(pool, clock, transports=to_sink(sink), retry_initial=300)
    assert await ob.run_once() == 1
    row = await pool.fetchrow("SELECT next_attempt, attempts, lease_owner FROM queue WHERE id=$1", qid)
    assert row["attempts"] == 1 and row["lease_owner"] is None
    wait = (row["next_attempt"] - clock()).total_seconds()
    assert 300 * 0.75 < wait <= 300 * 1.2
    rcpt = await pool.fetchrow("SELECT status, last_error, status_code FROM queue_recipients WHERE queue_id=$1", qid)
    assert (rcpt["status"], rcpt["status_code"]) == ("deferred", "4.2.0")
    assert "greylisted" in rcpt["last_error"]
    assert await ob.run_once() == 0  # not due yet
    sink.rcpt.clear()
    clock.advance(wait + 1)
    assert await ob.run_once() == 1
    assert sink.recipients == ["r@far.example"]
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_permanent_failure_bounces_to_local_sender(pool: asyncpg.Pool, ours: int, sinks,
                                                         clock: Clock) -> None:
    sink = await sinks(rcpt={"bad@far.example": "550 5.1.1 no such user here"})
    await submit(pool, RemoteRecipient("bad@far.example", orcpt="rfc822;Bad@far.example"), envid="ENV-42")
    assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 1
    assert sink.received == []
    (raw,) = await inbox(pool)
    msg, (per_message, rcpt) = _dsn(raw)
    assert msg["To"].addresses[0].addr_spec == SENDER
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.ours.example"
    assert per_message["Reporting-MTA"] == "dns;mx.ours.example"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert rcpt["Final-Recipient"] == "rfc822;bad@far.example"
    assert rcpt["Original-Recipient"] == "rfc822;Bad@far.example"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns;127.0.0.1"
    assert rcpt["Diagnostic-Code"] == "smtp;550 5.1.1 no such user here"
    headers = list(msg.iter_parts())[2]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Subject: hello" in headers.get_payload(decode=True)
    # The DSN came with a null sender (its own Return-Path), and the bounced entry is gone.
    prefix = await pool.fetchval("SELECT header_prefix FROM mailbox_messages")
    assert prefix.startswith(b"Return-Path: <>")
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_dsn_parameters_go_out_as_xtext(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    # The queue keeps ENVID and ORCPT decoded (smtp_in undoes their xtext); the next hop must get them
    # encoded again (RFC 3461 §4): sent as they were, "+2B" became "+" there and a space split the line.
    sink = await sinks(dsn=True)
    await submit(pool, RemoteRecipient("a+b@far.example", notify="FAILURE,DELAY", orcpt="rfc822;a+b=c@far.example"),
                 RemoteRecipient("plain@far.example", orcpt="utf-8;plain@far.example"),
                 envid="QQ+2B 1=x", ret="HDRS")
    assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 1
    assert sink.recipients == ["a+b@far.example", "plain@far.example"]
    assert sink.dsn_params == ["RET=HDRS", "ENVID=QQ+2B2B+201+3Dx", "NOTIFY=FAILURE,DELAY",
                               "ORCPT=rfc822;a+2Bb+3Dc@far.example", "ORCPT=rfc822;plain@far.example"]


async def test_original_recipient_is_not_decoded_twice(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks(rcpt={"x@far.example": "550 5.1.1 no such user"})
    await submit(pool, RemoteRecipient("x@far.example", orcpt="rfc822;lit+2Bx@far.example"), envid="E+41")
    await outbound(pool, clock, transports=to_sink(sink)).run_once()
    (raw,) = await inbox(pool)
    _, (per_message, rcpt) = _dsn(raw)
    assert rcpt["Original-Recipient"] == "rfc822;lit+2Bx@far.example"
    assert per_message["Original-Envelope-Id"] == "E+41"


async def test_mixed_outcomes_in_one_transaction(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks(rcpt={"bad@far.example": "550 5.1.1 unknown", "later@far.example": "452 4.2.2 full"})
    qid = await submit(pool, "ok@far.example", "bad@far.example", "later@far.example")
    assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 1
    assert sink.recipients == ["ok@far.example"]
    statuses = dict(await pool.fetch("SELECT recipient, status FROM queue_recipients WHERE queue_id=$1", qid))
    assert statuses == {"ok@far.example": "delivered", "bad@far.example": "bounced",
                        "later@far.example": "deferred"}
    (raw,) = await inbox(pool)
    _, blocks = _dsn(raw)
    assert [(b["Final-Recipient"], b["Action"]) for b in blocks[1:]] == [("rfc822;bad@far.example", "failed")]


async def test_no_dsn_for_null_sender_or_notify_never(pool: asyncpg.Pool, ours: int, sinks,
                                                      clock: Clock) -> None:
    sink = await sinks(rcpt={"bad@far.example": "550 5.1.1 unknown"})
    await submit(pool, "bad@far.example", sender="")
    await submit(pool, RemoteRecipient("bad@far.example", notify="NEVER"))
    assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 2
    assert await inbox(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_notify_success_reports_relayed(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks()
    await submit(pool, RemoteRecipient("r@far.example", notify="SUCCESS,FAILURE"))
    await outbound(pool, clock, transports=to_sink(sink)).run_once()
    (raw,) = await inbox(pool)
    _, blocks = _dsn(raw)
    assert blocks[1]["Action"] == "relayed" and blocks[1]["Status"] == "2.0.0"


async def test_dsn_to_a_remote_sender_is_queued_with_null_sender(pool: asyncpg.Pool, sinks,
                                                                 clock: Clock) -> None:
    sink = await sinks(rcpt={"bad@far.example": "550 5.1.1 unknown"})
    home = await sinks()
    await submit(pool, "bad@far.example", sender="someone@elsewhere.example")
    ob = outbound(pool, clock, transports={**to_sink(sink), **to_sink(home, "elsewhere.example")})
    assert await ob.run_once() == 2  # the bounce, then the DSN it queued
    (dsn,) = home.received
    assert dsn.mail_from == "<>" and dsn.rcpt_tos == ["someone@elsewhere.example"]
    assert b"multipart/report" in dsn.data


async def test_smtputf8_needed_but_not_offered_fails_with_clear_dsn(pool: asyncpg.Pool, ours: int, sinks,
                                                                     clock: Clock) -> None:
    sink = await sinks(smtputf8=False)
    await submit(pool, "dé@far.example")
    await outbound(pool, clock, transports=to_sink(sink)).run_once()
    assert sink.received == [] and sink.rcpt_attempts == []
    (raw,) = await inbox(pool)
    msg, blocks = _dsn(raw)
    assert blocks[1]["Status"] == "5.6.7" and "SMTPUTF8" in blocks[1]["Diagnostic-Code"]
    assert "SMTPUTF8" in list(msg.iter_parts())[0].get_content()


async def test_smtputf8_is_used_when_offered(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks(smtputf8=True)
    await submit(pool, "dé@far.example", raw="Subject: héllo\r\n\r\nbody ü\r\n".encode())
    await outbound(pool, clock, transports=to_sink(sink)).run_once()
    (got,) = sink.received
    assert got.rcpt_tos == ["dé@far.example"]
    assert "SMTPUTF8" in got.mail_options and "BODY=8BITMIME" in got.mail_options
