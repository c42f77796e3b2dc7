"""Transactions on outbound sessions (smtp_out/client.py over smtp_out/session.py), against a real aiosmtpd
sink that offers PIPELINING (RFC 2920: MAIL, RCPT and DATA sent in one write) and one that does not: the
same outcomes either way, sessions reused across messages, and a cached session the server dropped
replaced without deferring."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from config.settings import QueueSettings
from smtp_out import client
from smtp_out.routing import Hop
from tests.sinks import Sink, _Handler, _SinkSMTP
from tests.smtp_out.conftest import started

MESSAGE = b"From: a@ours.example\r\nSubject: hi\r\n\r\n.a line with a leading dot\r\nbye\r\n"


class _PipeliningHandler(_Handler):
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        # Were RCPT and DATA already waiting, unread, when MAIL came? Then the client pipelined.
        assert isinstance(self.sink, PipeliningSink)
        self.sink.pipelined.append(b"\r\nDATA\r\n" in bytes(server._reader._buffer))
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


@dataclass
class PipeliningSink(Sink):
    """The test sink, offering PIPELINING (aiosmtpd reads commands one line at a time either way), and
    noting for each MAIL whether the client had sent the rest of the transaction's commands with it."""

    pipelined: list[bool] = field(default_factory=list)

    def _protocol(self) -> asyncio.Protocol:
        proto = super()._protocol()
        if isinstance(proto, _SinkSMTP):
            handler = _PipeliningHandler(self)
            proto.event_handler = handler
            proto._handle_hooks = {m.removeprefix("handle_"): getattr(handler, m) for m in dir(handler)
                                   if m.startswith("handle_")}
            proto._ehlo_hook_ver = "new"
        return proto


@pytest.fixture(params=["pipelining", "one command at a time"])
async def start(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Sink]]]:
    """Start a sink of the flavour under test (`await start(rcpt=...)`); stopped after the test."""
    async with started(PipeliningSink if request.param == "pipelining" else Sink) as run:
        yield run


@pytest.fixture
async def cache() -> AsyncIterator[client.SessionCache]:
    sessions = client.SessionCache()
    yield sessions
    await sessions.close()


def _env(*rcpts: str) -> client.Envelope:
    return client.Envelope(sender="a@ours.example", message=MESSAGE,
                           recipients=[client.Recipient(n, r) for n, r in enumerate(rcpts)])


async def _deliver(sink: Sink, env: client.Envelope, cache: client.SessionCache | None) -> list[tuple[str, str]]:
    hop = Hop(name="127.0.0.1", port=sink.port, tls="opportunistic")
    settings = QueueSettings(connect_timeout=5, command_timeout=5, data_timeout=5)
    return [(r.status, r.reply) for r in await client.deliver(hop, "127.0.0.1", env, settings, "ours.example", cache)]


@pytest.mark.parametrize(("script", "rcpts", "outcomes", "received"), [
    ({}, ["a@far.example", "b@far.example"], ["delivered", "delivered"], [["a@far.example", "b@far.example"]]),
    ({"rcpt": {"x@far.example": "550 5.1.1 no such user", "y@far.example": "451 4.2.0 later"}},
     ["x@far.example", "a@far.example", "y@far.example"], ["bounced", "delivered", "deferred"], [["a@far.example"]]),
    ({"rcpt": {"x@far.example": "550 5.1.1 no such user"}}, ["x@far.example"], ["bounced"], []),
    ({"mail": "451 4.3.0 busy"}, ["a@far.example", "b@far.example"], ["deferred", "deferred"], []),
    ({"mail": "553 5.7.1 not you"}, ["a@far.example"], ["bounced"], []),
    ({"data": "554 5.6.0 content refused"}, ["a@far.example"], ["bounced"], []),
])
async def test_outcomes_then_the_session_carries_the_next_message(
        start: Callable[..., Awaitable[Sink]], cache: client.SessionCache, script: dict[str, Any], rcpts: list[str],
        outcomes: list[str], received: list[list[str]]) -> None:
    sink = await start(**script)
    assert [s for s, _ in await _deliver(sink, _env(*rcpts), cache)] == outcomes
    assert [m.rcpt_tos for m in sink.received] == received
    sink.rcpt, sink.mail, sink.data = {}, None, None
    assert await _deliver(sink, _env("next@far.example"), cache) == [("delivered", "250 2.0.0 queued")]
    assert sink.received[-1].rcpt_tos == ["next@far.example"]
    assert sink.received[-1].data.endswith(b"\r\n.a line with a leading dot\r\nbye\r\n")  # unstuffed again
    assert sink.connections == 1


async def test_consecutive_messages_share_one_session(start: Callable[..., Awaitable[Sink]],
                                                      cache: client.SessionCache) -> None:
    sink = await start()
    for n in range(5):
        assert await _deliver(sink, _env(f"r{n}@far.example"), cache) == [("delivered", "250 2.0.0 queued")]
    assert sink.connections == 1
    assert sink.recipients == [f"r{n}@far.example" for n in range(5)]
    if isinstance(sink, PipeliningSink):
        assert sink.pipelined == [True] * 5


async def test_a_cached_session_the_server_dropped_is_replaced_without_deferring(
        start: Callable[..., Awaitable[Sink]], cache: client.SessionCache) -> None:
    sink = await start()
    await _deliver(sink, _env("r1@far.example"), cache)
    for transport in list(sink._transports):
        transport.close()  # the server ends the idle session; we learn it only at MAIL's reply
    assert await _deliver(sink, _env("r2@far.example"), cache) == [("delivered", "250 2.0.0 queued")]
    assert sink.connections == 2
    assert sink.recipients == ["r1@far.example", "r2@far.example"]


async def test_a_session_lost_in_data_defers_and_is_not_kept(start: Callable[..., Awaitable[Sink]],
                                                             cache: client.SessionCache) -> None:
    sink = await start(data="drop")
    ((status, reply),) = await _deliver(sink, _env("r@far.example"), cache)
    assert status == "deferred" and reply.startswith(("421", "451"))
    sink.data = None
    assert await _deliver(sink, _env("r@far.example"), cache) == [("delivered", "250 2.0.0 queued")]
    assert sink.connections == 2
