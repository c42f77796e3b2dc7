"""Failures of the network and of our own workers: breaker, leases, concurrency, give-up, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from smtp_out import client
from smtp_out.worker import Outbound, QueueService
from storage import queue as store
from storage.delivery import RemoteRecipient
from tests.smtp_out.conftest import Clock, inbox, message, outbound, settings, submit, to_sink, until


async def test_breaker_opens_holds_then_probes_and_closes(pool: asyncpg.Pool, ours: int, sinks,
                                                          clock: Clock) -> None:
    sink = await sinks(connect=["drop", "drop"])
    qid = await submit(pool, "r@far.example")
    ob = outbound(pool, clock, transports=to_sink(sink), breaker_failures=2, breaker_cooldown=600,
                  retry_initial=60, retry_max=60)
    key = f"127.0.0.1:{sink.port}"
    for _ in range(2):
        assert await ob.run_once() == 1
        clock.advance(75)
    assert ob.breaker.state(key) == "open" and sink.connections == 2
    # Open: the entry comes due but no connection is tried; it waits for the probe time, and the
    # attempt that reached no server is not counted (backoff does not grow behind an open breaker).
    assert await ob.run_once() == 1
    assert sink.connections == 2
    assert await pool.fetchval("SELECT attempts FROM queue WHERE id=$1", qid) == 2
    row = await pool.fetchrow("SELECT next_attempt FROM queue WHERE id=$1", qid)
    assert row["next_attempt"] == ob.breaker.retry_at(key)
    status = await pool.fetchval("SELECT status FROM queue_recipients WHERE queue_id=$1", qid)
    assert status == "deferred"  # still queued, not bounced
    clock.advance(600)
    assert ob.breaker.state(key) == "half-open"
    assert await ob.run_once() == 1  # the probe: the sink now accepts
    assert sink.connections == 3 and sink.recipients == ["r@far.example"]
    assert ob.breaker.state(key) == "closed"


async def test_expired_lease_of_a_crashed_worker_is_retried(pool: asyncpg.Pool, ours: int, sinks,
                                                            clock: Clock) -> None:
    sink = await sinks()
    qid = await submit(pool, "r@far.example")
    crashed = outbound(pool, clock, transports=to_sink(sink), lease_seconds=120)
    assert [e.id for e in await crashed.claim()] == [qid]  # ... and then it dies without a word
    survivor = outbound(pool, clock, transports=to_sink(sink), lease_seconds=120)
    assert await survivor.run_once() == 0  # the lease still holds
    clock.advance(121)
    assert await survivor.run_once() == 1
    assert sink.recipients == ["r@far.example"]
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_a_worker_that_lost_its_lease_cannot_record(pool: asyncpg.Pool, ours: int, sinks,
                                                          clock: Clock) -> None:
    sink = await sinks(rcpt={"r@far.example": "550 5.1.1 unknown"})
    qid = await submit(pool, "r@far.example")
    slow = outbound(pool, clock, transports=to_sink(sink), lease_seconds=60)
    (entry,) = await slow.claim()
    clock.advance(61)
    fast = outbound(pool, clock, transports=to_sink(sink), lease_seconds=60)
    (taken,) = await fast.claim()
    assert taken.id == qid
    await slow.process(entry)  # delivers, but its results are discarded: no bounce, no DSN
    assert await pool.fetchval("SELECT status FROM queue_recipients WHERE queue_id=$1", qid) == "pending"
    assert await inbox(pool) == []
    await fast.process(taken)
    assert len(await inbox(pool)) == 1  # exactly one DSN


async def _queue_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_two_services_deliver_each_message_exactly_once(db_dsn: str, ours: int, sinks) -> None:
    sink = await sinks()
    pools = [await asyncpg.create_pool(db_dsn, min_size=1, max_size=6) for _ in range(2)]
    try:
        cfg = settings(transports=to_sink(sink), workers=3, poll_interval=0.05)
        services = [QueueService(Outbound(p, cfg)) for p in pools]
        for s in services:
            await s.start()
        n = 40
        for i in range(n):
            await submit(pools[i % 2], f"r{i}@far.example")
        await until(lambda: len(sink.recipients) >= n, 30)
        await until(lambda: _queue_empty(pools[0]), 30)
        await asyncio.sleep(0.2)  # a duplicate, were there one, would arrive now
        for s in services:
            await s.stop(grace=5)
        assert sorted(sink.recipients) == sorted(f"r{i}@far.example" for i in range(n))
        assert len(sink.recipients) == n
        assert await pools[0].fetchval("SELECT count(*) FROM delivery_log WHERE event='delivered'") == n
    finally:
        for p in pools:
            await p.close()


async def test_listen_wakes_the_service_before_the_poll(pool: asyncpg.Pool, ours: int, sinks) -> None:
    sink = await sinks()
    service = QueueService(Outbound(pool, settings(transports=to_sink(sink), poll_interval=60)))
    await service.start()
    try:
        await asyncio.sleep(0.1)  # the workers are now waiting out a 60 s poll
        await submit(pool, "r@far.example")
        await until(lambda: sink.received, 5)
    finally:
        await service.stop(grace=5)


async def test_shutdown_releases_a_stalled_delivery_for_retry(pool: asyncpg.Pool, ours: int, sinks) -> None:
    sink = await sinks(data="stall")
    qid = await submit(pool, "r@far.example")
    service = QueueService(Outbound(pool, settings(transports=to_sink(sink), lease_seconds=300)), workers=1)
    await service.start()
    await until(lambda: pool.fetchval("SELECT lease_owner FROM queue WHERE id=$1", qid), 5)
    await asyncio.sleep(0.2)  # in DATA now, stalled
    await service.stop(grace=0.2)
    row = await pool.fetchrow("SELECT lease_owner, state FROM queue WHERE id=$1", qid)
    assert row["lease_owner"] is None and row["state"] == "queued"  # due again for the next process
    assert await pool.fetchval("SELECT status FROM queue_recipients WHERE queue_id=$1", qid) == "pending"


async def test_gives_up_after_the_configured_time(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks(rcpt={"r@far.example": "451 4.3.0 try later"})
    await submit(pool, "r@far.example")
    ob = outbound(pool, clock, transports=to_sink(sink), give_up_after=3600, retry_initial=600,
                  retry_max=600, delay_warning_after=0)
    assert await ob.run_once() == 1
    clock.advance(3601)
    assert await ob.run_once() == 1
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0
    (raw,) = await inbox(pool)
    assert b"Action: failed" in raw and b"Status: 4.4.7" in raw and b"try later" in raw


async def test_one_delay_warning_then_the_final_bounce(pool: asyncpg.Pool, ours: int, sinks,
                                                       clock: Clock) -> None:
    sink = await sinks(rcpt={"r@far.example": "451 4.3.0 try later"})
    await submit(pool, RemoteRecipient("r@far.example", notify="DELAY,FAILURE"))
    ob = outbound(pool, clock, transports=to_sink(sink), retry_initial=600, retry_max=600,
                  delay_warning_after=1000, give_up_after=5000)
    for _ in range(10):
        await ob.run_once()
        clock.advance(800)
    msgs = await inbox(pool)
    assert len(msgs) == 2
    assert b"Action: delayed" in msgs[0] and b"Will-Retry-Until:" in msgs[0]
    assert b"Action: failed" in msgs[1]
    assert await pool.fetchval("SELECT count(*) FROM queue") == 0


async def test_concurrency_limit_per_destination(pool: asyncpg.Pool, ours: int, sinks) -> None:
    sink = await sinks()
    active = peak = 0
    real = sink._protocol

    def counting():  # wrap the sink's protocol to watch concurrent sessions
        nonlocal active, peak
        proto = real()
        made, lost = proto.connection_made, proto.connection_lost

        def on_made(t):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            made(t)

        def on_lost(exc):
            nonlocal active
            active -= 1
            lost(exc)

        proto.connection_made, proto.connection_lost = on_made, on_lost
        return proto

    sink._protocol = counting  # type: ignore[method-assign]
    await sink.stop()
    await sink.start()
    for i in range(12):
        await submit(pool, f"r{i}@far.example")
    cfg = settings(transports=to_sink(sink), workers=8, max_per_destination=2)
    service = QueueService(Outbound(pool, dataclasses.replace(cfg)))
    await service.start()
    try:
        await until(lambda: len(sink.recipients) >= 12, 20)
    finally:
        await service.stop(grace=5)
    assert peak <= 2


async def test_the_service_runs_up_to_workers_entries_at_once(pool: asyncpg.Pool, ours: int, sinks) -> None:
    sink = await sinks(data="stall")
    for i in range(5):
        await submit(pool, f"r{i}@far.example")
    service = QueueService(Outbound(pool, settings(transports=to_sink(sink), max_per_destination=10)), workers=3)
    await service.start()
    try:
        await until(lambda: len(sink.rcpt_attempts) >= 3, 10)  # three deliveries stalled in DATA at once
        await asyncio.sleep(0.3)  # a fourth, were the limit not kept, would start now
        assert len(sink.rcpt_attempts) == 3
        assert await pool.fetchval("SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL") == 3
    finally:
        await service.stop(grace=0.2)
    assert await pool.fetchval("SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL") == 0


async def test_a_slow_delivery_keeps_its_lease_against_another_service(db_dsn: str, ours: int, sinks) -> None:
    sink = await sinks(data="stall", stall_seconds=3.0)  # DATA answers 451 after 3 s: deferred
    pools = [await asyncpg.create_pool(db_dsn, min_size=1, max_size=4) for _ in range(2)]
    try:
        cfg = settings(transports=to_sink(sink), lease_seconds=1.5, poll_interval=0.05)
        first = QueueService(Outbound(pools[0], cfg))
        await first.start()
        await submit(pools[0], "r@far.example")
        await until(lambda: sink.rcpt_attempts, 10)
        second = QueueService(Outbound(pools[1], cfg))  # polls every 50 ms for expired leases
        await second.start()
        await until(lambda: pools[0].fetchval("SELECT lease_owner IS NULL FROM queue"), 10)
        await first.stop(grace=1)
        await second.stop(grace=1)
        # The heartbeat renewed the 1.5 s lease while DATA stalled: nobody else tried meanwhile.
        assert sink.rcpt_attempts == ["r@far.example"]
        assert await pools[0].fetchval("SELECT status FROM queue_recipients") == "deferred"
    finally:
        for p in pools:
            await p.close()


async def test_large_messages_are_read_at_delivery_and_only_a_few_at_once(pool: asyncpg.Pool, ours: int,
                                                                          sinks) -> None:
    sink = await sinks(data="stall")
    small, big = message(body="short"), message(body=("x" * 70 + "\r\n") * 80)
    for i in range(4):
        await submit(pool, f"big{i}@far.example", raw=big)
    await submit(pool, "small@far.example", raw=small)
    ob = Outbound(pool, settings(transports=to_sink(sink), max_per_destination=10), large_message=1000,
                  large_at_once=2)
    assert [e.raw for e in await store.claim(pool, "peek", ob.clock(), 0.001, 10, ob.large_message)] == [
        None, None, None, None, small]  # claimed without the large ones' bytes (the lease lapses at once)
    await asyncio.sleep(0.01)
    service = QueueService(ob, workers=8)
    await service.start()
    try:
        await until(lambda: set(sink.rcpt_attempts) >= {"small@far.example"}, 10)
        await until(lambda: len(sink.rcpt_attempts) >= 3, 10)
        await asyncio.sleep(0.3)  # a third large one, were the limit not kept, would start now
        assert sorted(sink.rcpt_attempts) == ["big0@far.example", "big1@far.example", "small@far.example"]
    finally:
        await service.stop(grace=0.2)


async def test_entries_to_one_destination_share_its_sessions(pool: asyncpg.Pool, ours: int, sinks) -> None:
    sink = await sinks()
    for i in range(10):
        await submit(pool, f"r{i}@far.example")
    service = QueueService(Outbound(pool, settings(transports=to_sink(sink), max_per_destination=2),
                                    sessions=client.SessionCache()), workers=8)
    await service.start()
    try:
        await until(lambda: len(sink.recipients) >= 10, 20)
    finally:
        await service.stop(grace=5)
    assert sorted(sink.recipients) == sorted(f"r{i}@far.example" for i in range(10))
    assert sink.connections <= 2  # ten messages, at most two sessions at once, each kept for the next
