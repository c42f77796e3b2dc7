"""CPU and wall time per delivery of the commit alone (storage.delivery through storage.groupcommit), with
N concurrent deliverers, in-process, without listeners: what group commit saves, measured on its own.

    python bench/commitcpu.py [-c 1,10,50] [-n 2000] [--size 2000]

For each concurrency: a fresh database with 50 accounts, N messages (made and summarised beforehand, not
counted) delivered by that many tasks sharing one pool, each message to one account's INBOX as the MX
delivers. Reports wall ms per message, this process's CPU (encoding, the pool, the group commit), the
CPU of PostgreSQL's backends for that database plus its WAL writer, and how many transactions stored the
messages (rows written by one transaction share its xmin). Needs PostgreSQL at MAILSERVER_TEST_DSN (or
postgresql://postgres@127.0.0.1:5432/postgres); binds no port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from messages import make_message  # noqa: E402

from mailcore.mime.precompute import summarize  # noqa: E402
from storage import accounts  # noqa: E402
from storage.delivery import Delivery, LocalRecipient  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402

ADMIN = os.environ.get("MAILSERVER_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_cpu(db: str) -> float:
    """User + system seconds of the backends serving `db` and of the WAL writer (it flushes commits)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["name"] in ("postgres", "postmaster") and (f" {db} " in cmd + " " or "walwriter" in cmd):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


async def run(concurrency: int, n: int, size: int) -> dict[str, float]:
    db = f"commitcpu_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    dsn = ADMIN.rsplit("/", 1)[0] + "/" + db
    try:
        conn = await asyncpg.connect(dsn)
        await apply_migrations(conn)
        await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=min(concurrency, 20), max_size=20,
                                         server_settings={"synchronous_commit": "on"})
        await accounts.add_domain(pool, "bench.test")
        ids = [await accounts.add_account(pool, f"u{i}@bench.test", "x") for i in range(50)]
        raws = [make_message(1, i, size, f"u{i % 50}@bench.test", "s@remote.example") for i in range(n)]
        sums = [summarize(raw) for raw in raws]
        todo = iter(range(n))

        async def deliverer() -> None:
            for i in todo:
                d = Delivery(sender="s@remote.example")
                d.add_local(LocalRecipient(ids[i % 50], f"u{i % 50}@bench.test", unlimited=True))
                await d.commit(pool, raws[i], sums[i])

        pg0, cpu0, t0 = _pg_cpu(db), time.process_time(), time.perf_counter()
        await asyncio.gather(*(deliverer() for _ in range(concurrency)))
        wall, cpu, pg = time.perf_counter() - t0, time.process_time() - cpu0, _pg_cpu(db) - pg0
        transactions = await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM messages")
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    return {"wall_ms": 1000 * wall / n, "client_cpu_ms": 1000 * cpu / n, "pg_cpu_ms": 1000 * pg / n,
            "transactions": transactions}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--concurrency", default="1,10,50", help="comma list of concurrent deliverers")
    p.add_argument("-n", "--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=2000)
    a = p.parse_args()
    print(f"{'deliverers':>10}  {'wall ms/msg':>11}  {'client CPU':>10}  {'PG CPU':>7}  transactions")
    for c in (int(x) for x in a.concurrency.split(",")):
        r = asyncio.run(run(c, a.messages, a.size))
        print(f"{c:>10}  {r['wall_ms']:>11.3f}  {r['client_cpu_ms']:>10.3f}  {r['pg_cpu_ms']:>7.3f}  "
              f"{int(r['transactions'])} for {a.messages}")


if __name__ == "__main__":
    main()
