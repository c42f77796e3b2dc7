"""CPU of the background full-text indexer per message, in-process, without listeners: fills a fresh
database through the delivery seam (storage.delivery.Delivery + precompute.summarize, as bench/ours.py's
fill path), then runs the indexer (storage.bodyindex) over it and reports per message:
the Python CPU of the indexing process (its decoding child, storage.textbatch, where texts are decoded, or
its worker threads for `index_all`; and the event loop's thread, which encodes and decodes the
statements) and the CPU of the PostgreSQL backend serving it.
Deliveries are not counted: the indexer runs only after each round of them.

    python bench/indexcpu.py [-n 3000] [--size 2000 | --mix] [--fresh 0] [--round 3000] [--repeat 1]

`--round` below `-n` delivers and indexes in rounds of that many messages, each indexed by one pass of
the indexer service (`TextIndexer.index_pending`), the way a live indexer meets mail (a pass every poll
interval finds the messages delivered since the last). `--prefill N` first delivers and indexes N
messages, not counted, then analyzes the tables as autovacuum would: a live server's store is not empty.
(Not counted either: the pass from id 0 that the service makes when it starts and every 10 minutes.) `--mix` takes the sizes of
bench/ours.py's filled mailboxes (mostly short text, some multipart with attachments) instead of one size.
The bench's prose draws on ~140 words, so after the first batch every word is known; `--fresh K` ends
each message's text with K words of its own (order numbers, tracking codes: real mail's new words), so
the vocabulary grows as it does with real mail. Needs PostgreSQL at
MAILSERVER_TEST_DSN (or postgresql://postgres@127.0.0.1:5432/postgres); binds no port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from messages import mailbox_size, make_message  # noqa: E402
from probes import child_pids  # noqa: E402

from config.settings import SearchSettings  # noqa: E402
from mailcore.mime.precompute import summarize  # noqa: E402
from storage import accounts, bodyindex  # noqa: E402
from storage.delivery import Delivery, LocalRecipient  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402

ADMIN = os.environ.get("MAILSERVER_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _dsn(name: str) -> str:
    base, _, _ = ADMIN.rpartition("/")
    return f"{base}/{name}"


def _cpu_of(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _threads() -> tuple[float, float]:
    """(CPU of this process's main thread, CPU of all its other threads and of its live children: the
    indexer's decoding process) so far, in seconds."""
    main = threading.main_thread().native_id
    mine = other = 0.0
    for t in psutil.Process().threads():
        if t.id == main:
            mine += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    for pid in child_pids(os.getpid()):
        try:
            other += _cpu_of(pid)
        except psutil.Error:
            continue
    return mine, other


def message(i: int, size: int, fresh: int) -> bytes:
    """Message i of the run: `size` bytes (0: a filled mailbox's mix), with `fresh` words of its own."""
    if not size:
        size = mailbox_size(random.Random(7919 + i))
    raw = make_message(1, i, size, "u@bench.test")
    if fresh and raw.endswith(b"\r\n") and b"multipart/" not in raw[: raw.find(b"\r\n\r\n")]:
        words = " ".join(f"ref{i:x}n{k}q{(i * 7919 + k) % 65521:x}" for k in range(fresh))
        raw += f"Ref: {words}\r\n".encode()
    return raw


async def _deliver(pool: asyncpg.Pool, account: int, first: int, count: int, size: int, fresh: int) -> None:
    queue = iter(range(first, first + count))

    async def worker() -> None:
        for i in queue:
            raw = message(i, size, fresh)
            d = Delivery(sender="sender@example.org")
            d.add_local(LocalRecipient(account, "u@bench.test", "INBOX", unlimited=True))
            await d.commit(pool, raw, summarize(raw))

    await asyncio.gather(*(worker() for _ in range(8)))


async def measure(n: int, size: int, round_size: int, batch: int, fresh: int, prefill: int) -> dict[str, float]:
    name = f"indexcpu_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(_dsn(name))
        await apply_migrations(conn)
        await conn.close()
        deliver_pool = await asyncpg.create_pool(_dsn(name), min_size=8, max_size=8)
        # one connection: its backend is the indexer's whole PostgreSQL side
        index_pool = await asyncpg.create_pool(_dsn(name), min_size=1, max_size=1)
        backend = await index_pool.fetchval("SELECT pg_backend_pid()")
        await accounts.add_domain(deliver_pool, "bench.test")
        account = await accounts.add_account(deliver_pool, "u@bench.test", "x")
        service = bodyindex.TextIndexer(index_pool, SearchSettings(batch=batch))
        if prefill:  # indexed by the service, which then starts its passes from just behind the top
            await _deliver(deliver_pool, account, 0, prefill, size, fresh)
            await service.index_pending()
            await deliver_pool.execute("VACUUM ANALYZE")
        py_main = py_threads = pg = wall = 0.0
        stored = 0
        for first in range(prefill, prefill + n, round_size):
            await _deliver(deliver_pool, account, first, min(round_size, prefill + n - first), size, fresh)
            m0, o0 = _threads()
            p0, w0 = _cpu_of(backend), time.perf_counter()
            if round_size < n:
                before = service.indexed
                await service.index_pending()
                stored += service.indexed - before
            else:
                stored += await bodyindex.index_all(index_pool, batch=batch)
            await bodyindex.merge_pending(index_pool)  # the indexer's work when it goes idle
            m1, o1 = _threads()
            p1, w1 = _cpu_of(backend), time.perf_counter()
            py_main, py_threads, pg, wall = py_main + m1 - m0, py_threads + o1 - o0, pg + p1 - p0, wall + w1 - w0
        assert stored == n, (stored, n)
        texts = await index_pool.fetchval("SELECT pg_total_relation_size('message_texts')")
        words = await index_pool.fetchval("SELECT pg_total_relation_size('search_words')")
        await service.stop(0)
        await deliver_pool.close()
        await index_pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ms = 1000.0 / n
    return {"python_main_ms": py_main * ms, "python_threads_ms": py_threads * ms, "postgres_ms": pg * ms,
            "wall_ms": wall * ms, "message_texts_kb": texts / 1024, "search_words_kb": words / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=3000, help="messages")
    p.add_argument("--size", type=int, default=2000, help="approximate message size in bytes")
    p.add_argument("--mix", action="store_true", help="sizes of a filled mailbox instead of --size")
    p.add_argument("--fresh", type=int, default=0, help="words of its own at the end of each text/plain message")
    p.add_argument("--round", type=int, default=0, help="deliver and index in rounds of this many (0: all)")
    p.add_argument("--prefill", type=int, default=0, help="messages delivered and indexed first, not counted")
    p.add_argument("--batch", type=int, default=200, help="the indexer's batch (search.batch)")
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    for _ in range(a.repeat):
        r = asyncio.run(measure(a.n, 0 if a.mix else a.size, a.round or a.n, a.batch, a.fresh, a.prefill))
        print(f"n={a.n} size={'mix' if a.mix else a.size} fresh={a.fresh} prefill={a.prefill} round={a.round or a.n} batch={a.batch}: per message"
              f" python {r['python_main_ms'] + r['python_threads_ms']:.3f} ms"
              f" (loop {r['python_main_ms']:.3f}, decoder {r['python_threads_ms']:.3f}),"
              f" postgres {r['postgres_ms']:.3f} ms, wall {r['wall_ms']:.3f} ms;"
              f" message_texts {r['message_texts_kb']:.0f} KB, search_words {r['search_words_kb']:.0f} KB",
              flush=True)


if __name__ == "__main__":
    main()
