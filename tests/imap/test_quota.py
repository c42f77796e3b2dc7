"""QUOTA (RFC 9208) over the real listener with imaplib: what Thunderbird asks to show how full an
account is. One root per account, "", over every mailbox; STORAGE in KiB."""

from __future__ import annotations

import asyncio
import imaplib

from storage import accounts
from tests.imap.conftest import PASSWORD, USER, Listening, message
from tests.imap.test_server import Line


def _session(listening: Listening) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", listening.imap_port)
    m.login(USER, PASSWORD)
    return m


async def test_quota_of_an_account_with_a_quota(listening: Listening) -> None:
    world = listening.world
    await accounts.set_quota(world.pool, USER, 10 * 1024 * 1024 + 700)  # the limit is rounded down
    for n in range(3):
        await world.deliver(message(n, body="x" * 3000 + "\r\n"))
    used = (await accounts.storage_use(world.pool, world.account_id))[0]
    assert used > 9000

    def run() -> None:
        m = _session(listening)
        assert "QUOTA" in m.capabilities and "QUOTA=RES-STORAGE" in m.capabilities
        typ, data = m.getquotaroot("Sent")
        assert typ == "OK"
        roots, quotas = data
        assert roots == [b'Sent ""']
        assert quotas == [f'"" (STORAGE {-(-used // 1024)} 10240)'.encode()]
        typ, data = m.getquota('""')
        assert typ == "OK" and data == quotas
        typ, data = m.getquota("other")
        assert typ == "NO"
        typ, data = m.getquotaroot("Nowhere")
        assert typ == "NO"
        m.logout()

    await asyncio.to_thread(run)


async def test_an_account_without_a_quota_has_no_root(listening: Listening) -> None:
    """RFC 9208 §4.3: a mailbox without a quota root gets a QUOTAROOT response naming none."""

    def run() -> None:
        m = _session(listening)
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK" and data == [[b"INBOX"], [None]]
        typ, data = m.getquota('""')
        assert typ == "NO"
        m.logout()

    await asyncio.to_thread(run)


async def test_quota_needs_login(listening: Listening) -> None:
    c = await Line.open(listening.imap_port)
    await c.line()
    assert (await c.cmd("a GETQUOTAROOT INBOX"))[-1].startswith("a BAD")
    c.writer.close()
