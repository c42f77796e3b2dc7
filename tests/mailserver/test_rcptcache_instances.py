"""Two `mailserver serve` processes on one database, each with its routing cache, and the admin's CLI
as a third process: a removed account is refused by both once the NOTIFY is in, and accepted again
when it is added back. Nothing but migration 0011's notification can tell the other processes."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from mailcore import replies
from storage import accounts
from tests.mailserver.test_cli import run
from tests.server_process import ServerProcess
from tests.smtp_in.harness import HASH
from tests.smtp_in.test_mx import code
from tests.smtp_in.test_rcptcache import rcpt
from tests.smtp_out.conftest import until

USER = "user@instances.example"


async def test_the_cli_in_another_process_reaches_every_instance_cache(db_dsn: str, pool: asyncpg.Pool,
                                                                        tmp_path: Path) -> None:
    await accounts.add_domain(pool, "instances.example")
    await accounts.add_account(pool, USER, HASH)
    instances = [ServerProcess(db_dsn, tmp_path / f"i{n}") for n in range(2)]
    try:
        for instance in instances:
            await instance.start()
        ports = [instance.ports["smtp.mx"] for instance in instances]

        async def answers(expected: replies.Reply) -> bool:
            return all([await rcpt(port, USER) == code(expected) for port in ports])

        # Each instance LISTENs (its cache is on) and has USER's route in memory.
        await until(lambda: pool.fetchval("SELECT count(*) = 2 FROM pg_stat_activity"
                                          " WHERE application_name = 'mailserver-routes'"))
        assert await answers(replies.RECIPIENT_OK) and await answers(replies.RECIPIENT_OK)
        assert run(db_dsn, "user", "remove", USER).returncode == 0
        await until(lambda: answers(replies.MAILBOX_UNAVAILABLE))
        assert run(db_dsn, "user", "add", USER, stdin="a-long-password\n").returncode == 0
        await until(lambda: answers(replies.RECIPIENT_OK))
    finally:
        for instance in instances:
            await instance.stop()
