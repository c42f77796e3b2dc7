"""smtp_out.bounce through the real worker: a bounce of a large original is built off the event loop."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.smtp_out.conftest import SENDER, Clock, inbox, outbound, submit, to_sink


def _many_parts(parts: int) -> bytes:
    """A multipart message of `parts` small text parts (~6 MB at 9,000)."""
    head = (f"From: <{SENDER}>\r\nTo: <r@far.example>\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n").encode()
    part = b"--b\r\nContent-Type: text/plain\r\n\r\n" + (b"y" * 70 + b"\r\n") * 10
    return head + part * parts + b"--b--\r\n"


async def test_a_large_ret_full_bounce_does_not_block_the_loop(pool: asyncpg.Pool, ours: int, sinks,
                                                               clock: Clock) -> None:
    # Building and summarising the DSN ran on the loop: returned whole (RET=FULL), 5,000 parts held it
    # for ~2 s (9,000 parts: 5.8 s), every other delivery and the lease heartbeat stalled meanwhile.
    sink = await sinks(rcpt={"r@far.example": "550 5.1.1 no such user"})
    await submit(pool, "r@far.example", raw=_many_parts(5000), ret="FULL")
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        assert await outbound(pool, clock, transports=to_sink(sink)).run_once() == 1
    finally:
        done.set()
        await task
    assert max(gaps) < 0.5
    (dsn,) = await inbox(pool)
    assert b"Content-Type: message/rfc822" in dsn and dsn.count(b"--b\r\n") == 5000
