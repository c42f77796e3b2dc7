"""`mailserver queue ...` against a real database: list, show, hold, release, retry, delete round-trip."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailserver.cli import main
from tests.smtp_out.conftest import submit


@pytest.fixture
def cli(db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("MAILSERVER_DATABASE__DSN", db_dsn)
    monkeypatch.delenv("MAILSERVER_CONFIG", raising=False)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["queue", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_queue_commands_round_trip(pool: asyncpg.Pool, cli) -> None:
    assert await cli("list") == (0, "queue is empty\n", "")
    a = await submit(pool, "r@far.example", "s@far.example", sender="a@ours.example")
    b = await submit(pool, "t@other.example", sender="")
    await pool.execute("UPDATE queue SET next_attempt = now() + interval '1 hour' WHERE id = $1", b)

    code, out, _ = await cli("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["ID", "STATE", "QUEUED"]
    assert lines[1].startswith(f"{a}\tqueued\t") and "\ta@ours.example\t2\t" in lines[1]
    assert lines[2].startswith(f"{b}\tqueued\t") and "\t<>\t1\t" in lines[2]

    code, out, _ = await cli("show", str(a))
    assert code == 0 and "sender:        <a@ours.example>" in out
    assert "\tr@far.example\tpending" in out and "\ts@far.example\tpending" in out

    assert (await cli("hold", str(a)))[:2] == (0, f"queue entry {a} held\n")
    assert await pool.fetchval("SELECT state FROM queue WHERE id=$1", a) == "held"
    code, _, err = await cli("retry", str(a))
    assert code == 1 and "is held; release it instead" in err
    assert (await cli("release", str(a)))[0] == 0
    assert await pool.fetchval("SELECT state FROM queue WHERE id=$1", a) == "queued"
    code, _, err = await cli("release", str(a))
    assert code == 1 and "is not held" in err

    assert await cli("retry", "--all") == (0, "2 queue entries due now\n", "")
    assert await pool.fetchval("SELECT next_attempt <= now() FROM queue WHERE id=$1", b)
    code, _, err = await cli("retry")
    assert code == 2 and "give an ID or --all" in err

    assert (await cli("delete", str(b)))[:2] == (0, f"queue entry {b} deleted\n")
    assert await pool.fetchval("SELECT count(*) FROM queue") == 1
    code, _, err = await cli("show", str(b))
    assert code == 1 and f"no such queue entry: {b}" in err
    assert await pool.fetchval("SELECT event FROM delivery_log WHERE queue_id=$1 ORDER BY id DESC LIMIT 1", b) == "deleted"
