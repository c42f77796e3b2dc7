"""Crash test: SIGKILL the real server process in the middle of a burst of deliveries, restart it, and
prove that every message that got 250 is stored exactly once (RFC 5321 §6.1: a 250 is a promise)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosmtplib
import asyncpg

from tests.server_process import ServerProcess
from tests.smtp_in.harness import LOCAL, USER, seed

N = 200
KILL_AFTER = 60  # acknowledged messages before the kill


def message(i: int) -> bytes:
    return (f"From: burst@remote.example\r\nTo: {USER}\r\nSubject: burst {i}\r\n"
            f"Message-ID: <burst-{i}@remote.example>\r\n\r\n" + "line of body text\r\n" * 50).encode()


async def send_one(port: int, i: int, acked: set[int], enough: asyncio.Event) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                             local_hostname="burst.remote.example")
    try:
        await client.connect()
        errors, _ = await client.sendmail("burst@remote.example", [USER], message(i))
        if not errors:
            acked.add(i)  # the 250 after DATA arrived
            if len(acked) >= KILL_AFTER:
                enough.set()
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass  # the server died under us: no promise was made for this one


async def test_sigkill_mid_burst_loses_no_acknowledged_message(db_dsn: str, tmp_path: Path) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        await seed(pool)
        server = ServerProcess(db_dsn, tmp_path / "srv", listeners=["smtp.mx"], env={
            "MAILSERVER_SMTP__MAX_CONNECTIONS_PER_IP": "1000", "MAILSERVER_SMTP__MAX_CONNECTIONS": "1000",
            "MAILSERVER_LIMITS__SMTP_CONNECTIONS_PER_MINUTE": "100000"})
        await server.start()
        port = server.ports["smtp.mx"]
        acked: set[int] = set()
        enough = asyncio.Event()
        started = time.monotonic()
        try:
            senders = [asyncio.create_task(send_one(port, i, acked, enough)) for i in range(N)]
            await asyncio.wait_for(enough.wait(), 60)
            server.kill()  # SIGKILL: no shutdown code runs
            await asyncio.wait_for(asyncio.gather(*senders), 30)
            # (A 250 written just before the kill may still be read afterwards: it counts as a promise.)
            assert 0 < len(acked) < N, "the kill must land mid-burst"

            await server.start()  # the store must be usable after the crash
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
            await client.connect()
            await client.sendmail("burst@remote.example", [f"user@{LOCAL}"], message(N))
            await client.quit()
        finally:
            await server.stop()
        rows = await pool.fetch("SELECT message_id, count(*) AS n FROM messages GROUP BY message_id")
        counts = {r["message_id"]: r["n"] for r in rows}
        missing = [i for i in acked if counts.get(f"<burst-{i}@remote.example>", 0) != 1]
        assert missing == [], f"acknowledged but not stored exactly once: {missing}"
        assert all(n == 1 for n in counts.values())
        assert counts.get(f"<burst-{N}@remote.example>") == 1
        uids = await pool.fetch("SELECT uid FROM mailbox_messages ORDER BY uid")
        assert len(uids) == len(counts)  # every stored message is in the mailbox, no orphan rows
        print(f"crash test: {len(acked)} acknowledged of {N} before SIGKILL, {len(counts) - 1} stored, "
              f"{time.monotonic() - started:.1f}s")
    finally:
        await pool.close()
