"""Losing the database: IMAP answers NO [UNAVAILABLE] and the session stays usable."""

from __future__ import annotations

import asyncpg

from config.settings import ListenerSettings
from imap.server import IMAPService
from tests.imap.conftest import make_settings as imap_settings
from tests.imap.test_server import Line


async def test_imap_says_no_unavailable(dead_pool: asyncpg.Pool, tmp_path: object) -> None:
    loop = ListenerSettings(enabled=True, address="127.0.0.1", port=0)
    settings = imap_settings(imap=loop, imaps=loop)
    svc = IMAPService(settings, dead_pool, "", None)
    svc.notifier.start = _no_notifier  # type: ignore[method-assign]
    await svc.start()
    try:
        c = await Line.open(svc.ports["imap"])
        assert (await c.line()).startswith("* OK")
        assert (await c.cmd('a LOGIN user@example.test "pw"'))[-1].startswith("a NO [UNAVAILABLE]")
        assert (await c.cmd("b NOOP"))[-1].startswith("b OK")
        c.writer.close()
    finally:
        svc.notifier.stop = _no_notifier  # type: ignore[method-assign]
        await svc.stop(1)


async def _no_notifier() -> None:
    return None
