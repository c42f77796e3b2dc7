"""Losing the database: SMTP answers 451 4.3.0 (the sender retries) and IMAP NO [UNAVAILABLE], the
connection stays usable, and the pool backs off instead of dialling the dead server for every command."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from storage.db import ConnectBackoff, StorageUnavailable
from tests.server_process import free_port
from tests.smtp_in.harness import USER, RawClient, make_settings, start_server


async def test_smtp_says_451_and_keeps_the_session(dead_pool: asyncpg.Pool, tmp_path: Path) -> None:
    srv = await start_server(dead_pool, make_settings(tmp_path), None)
    try:
        c = await RawClient.connect(srv.port("mx"))
        assert (await c.cmd("EHLO client.example"))[0] == 250
        assert (await c.cmd("MAIL FROM:<a@remote.example>"))[0] == 250
        code, text = await c.cmd(f"RCPT TO:<{USER}>")
        assert (code, text.split()[1]) == (451, "4.3.0")
        assert "Error" not in text and "refused" not in text.lower()  # the cause is logged, not sent
        assert (await c.cmd("NOOP"))[0] == 250
        await c.close()
    finally:
        await srv.stop()


async def test_backoff_fails_fast_between_attempts() -> None:
    backoff = ConnectBackoff(initial=0.5, maximum=1.0)
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(OSError):
        await backoff(dsn)
    # Inside the delay no connection is tried: StorageUnavailable is raised before any attempt (an attempt
    # on this closed port would raise OSError again).
    with pytest.raises(StorageUnavailable):
        await backoff(dsn)
    assert backoff.delay == 0.5
    backoff.retry_at = 0
    with pytest.raises(OSError):
        await backoff(dsn)
    assert backoff.delay == 1.0


async def test_backoff_resets_on_success(db_dsn: str) -> None:
    backoff = ConnectBackoff()
    backoff.delay, backoff.retry_at = 2.0, 0.0
    conn = await backoff(db_dsn)
    await conn.close()
    assert (backoff.delay, backoff.retry_at) == (0.0, 0.0)


