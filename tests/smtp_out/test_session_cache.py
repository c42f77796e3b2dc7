"""Outbound sessions kept for the next message to the same destination (smtp_out.client.SessionCache)."""

from __future__ import annotations

from config.settings import QueueSettings
from smtp_out import client
from smtp_out.routing import Hop
from tests.sinks import Sink

MESSAGE = b"From: a@ours.example\r\nSubject: hi\r\n\r\nhello\r\n"


def envelope(n: int) -> client.Envelope:
    return client.Envelope(sender="a@ours.example", recipients=[client.Recipient(n, f"r{n}@far.example")],
                           message=MESSAGE)


async def test_consecutive_messages_share_one_session() -> None:
    sink = await Sink().start()
    cache = client.SessionCache()
    hop = Hop(name="127.0.0.1", port=sink.port, tls="opportunistic")
    try:
        for n in range(3):
            results = await client.deliver(hop, "127.0.0.1", envelope(n), QueueSettings(), "ours.example", cache)
            assert [r.status for r in results] == ["delivered"]
        assert sink.connections == 1
        assert sink.recipients == ["r0@far.example", "r1@far.example", "r2@far.example"]
    finally:
        await cache.close()
        await sink.stop()


async def test_a_dead_cached_session_is_replaced_without_deferring() -> None:
    sink = await Sink().start()
    cache = client.SessionCache()
    hop = Hop(name="127.0.0.1", port=sink.port, tls="opportunistic")
    key = (hop, "127.0.0.1", "ours.example")
    try:
        await client.deliver(hop, "127.0.0.1", envelope(1), QueueSettings(), "ours.example", cache)
        cached = cache.take(key)
        assert cached is not None
        smtp, uses = cached
        assert smtp.transport is not None
        smtp.transport.close()  # as if the server had dropped the idle session
        cache.put(key, smtp, uses)
        results = await client.deliver(hop, "127.0.0.1", envelope(2), QueueSettings(), "ours.example", cache)
        assert [r.status for r in results] == ["delivered"]
        assert sink.connections == 2
        assert sink.recipients == ["r1@far.example", "r2@far.example"]
    finally:
        await cache.close()
        await sink.stop()


async def test_sessions_are_closed_after_max_uses_and_without_a_cache() -> None:
    sink = await Sink().start()
    cache = client.SessionCache(max_uses=2)
    hop = Hop(name="127.0.0.1", port=sink.port, tls="opportunistic")
    try:
        for n in range(4):
            await client.deliver(hop, "127.0.0.1", envelope(n), QueueSettings(), "ours.example", cache)
        assert sink.connections == 2
        await client.deliver(hop, "127.0.0.1", envelope(9), QueueSettings(), "ours.example")
        assert sink.connections == 3
        assert len(sink.received) == 5
    finally:
        await cache.close()
        await sink.stop()
