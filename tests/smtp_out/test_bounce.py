"""smtp_out.bounce through the real worker: a bounce returning a large original whole (RET=FULL).

Building and summarising such a DSN now runs in a worker thread (it held the event loop 1.5 s for
5,000 parts). That it is off the loop is not asserted here (tests assert no timings); that the bounce
built there is complete and right is."""

from __future__ import annotations

import asyncpg

from tests.smtp_out.conftest import SENDER, Clock, inbox, outbound, submit, to_sink


def _many_parts(parts: int) -> bytes:
    """A multipart message of `parts` small text parts (~3.5 MB at 5,000)."""
    head = (f"From: <{SENDER}>\r\nTo: <r@far.example>\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n").encode()
    part = b"--b\r\nContent-Type: text/plain\r\n\r\n" + (b"y" * 70 + b"\r\n") * 10
    return head + part * parts + b"--b--\r\n"


async def test_a_large_ret_full_bounce_returns_the_original_whole(pool: asyncpg.Pool, ours: int, sinks,
                                                                  clock: Clock) -> None:
    sink = await sinks(rcpt={"r@far.example": "550 5.1.1 no such user"})
    original = _many_parts(5000)
    await submit(pool, "r@far.example", raw=original, ret="FULL")
    assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 1
    (dsn,) = await inbox(pool)
    assert b"Content-Type: message/rfc822" in dsn and dsn.count(b"--b\r\n") == 5000
    assert original[original.index(b"\r\n\r\n"):] in dsn
