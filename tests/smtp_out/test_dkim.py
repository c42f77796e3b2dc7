"""DKIM signing once before the first attempt, verified at the sink with dkimpy."""

from __future__ import annotations

import asyncpg
import dkim

from mailcore.auth.dkim import generate_key, sign_message
from storage import dkim_keys
from tests.smtp_out.conftest import Clock, outbound, submit, to_sink


async def test_signed_once_and_every_attempt_sends_the_same_bytes(pool: asyncpg.Pool, ours: int, sinks,
                                                                  clock: Clock) -> None:
    pem, txt = generate_key("rsa", 2048)
    await dkim_keys.add_key(pool, "ours.example", "s1", pem, "rsa-sha256")
    sink = await sinks(rcpt={"r@far.example": "451 4.2.0 later"})
    qid = await submit(pool, "r@far.example")
    calls = []

    def counting_signer(*args):
        calls.append(args[1:3])
        return sign_message(*args)

    ob = outbound(pool, clock, signer=counting_signer, transports=to_sink(sink))
    await ob.run_once()
    prefix = await pool.fetchval("SELECT signed_prefix FROM queue WHERE id=$1", qid)
    assert prefix.startswith(b"DKIM-Signature:") and b"d=ours.example" in prefix and b"s=s1" in prefix
    sink.rcpt.clear()
    clock.advance(3600)
    await ob.run_once()
    assert calls == [("ours.example", "s1")]  # signed once, for the first attempt only
    (got,) = sink.received
    assert got.data.startswith(prefix)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.ours.example."
        return txt.encode()

    assert dkim.verify(got.data, dnsfunc=dnsfunc)


async def test_unsigned_without_a_key(pool: asyncpg.Pool, ours: int, sinks, clock: Clock) -> None:
    sink = await sinks()
    await submit(pool, "r@far.example")
    await outbound(pool, clock, signer=sign_message, transports=to_sink(sink)).run_once()
    assert not sink.received[0].data.startswith(b"DKIM-Signature")
