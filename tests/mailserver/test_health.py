"""`mailserver health`: exit 0 on a reachable, migrated database; 1 when unreachable or behind."""

from __future__ import annotations

from storage.migrations import available
from tests.mailserver.test_cli import run
from tests.pg import PgServer
from tests.server_process import free_port


def test_healthy(db_dsn: str) -> None:
    r = run(db_dsn, "health")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: database answered") and f"migrations {len(available())}/{len(available())} applied" in r.stdout


def test_unreachable() -> None:
    r = run(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", "health", "--timeout", "2")
    assert r.returncode == 1 and "unreachable" in r.stderr


async def test_not_migrated(test_postgres: PgServer) -> None:
    dsn = await test_postgres.new_database(migrated=False)
    r = run(dsn, "health")
    assert r.returncode == 1 and "not applied (run: mailserver db migrate)" in r.stderr
