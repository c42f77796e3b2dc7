"""TLS to the next hop: opportunistic STARTTLS, required and verified STARTTLS, and smarthost AUTH."""

from __future__ import annotations

import ssl
from pathlib import Path

import asyncpg
import pytest
import trustme

from tests.smtp_out.conftest import Clock, outbound, submit


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_ctx(ca: trustme.CA, name: str = "localhost") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_opportunistic_starttls_accepts_any_certificate(pool: asyncpg.Pool, ours: int, sinks,
                                                               clock: Clock, ca: trustme.CA) -> None:
    sink = await sinks(tls=_server_ctx(ca, "some-other-name.test"))
    await submit(pool, "r@far.example")
    await outbound(pool, clock, transports={"far.example": f"smtp://127.0.0.1:{sink.port}"}).run_once()
    assert sink.received[0].tls


async def test_required_tls_verified(pool: asyncpg.Pool, ours: int, sinks, clock: Clock, ca: trustme.CA,
                                     tmp_path: Path) -> None:
    sink = await sinks(tls=_server_ctx(ca), auth=("relay-user", "s3cret"))
    await submit(pool, "r@far.example")
    ob = outbound(pool, clock, tls_ca_file=_ca_file(ca, tmp_path),
                  transports={"*": f"smtp+starttls://relay-user:s3cret@localhost:{sink.port}"})
    await ob.run_once()
    assert sink.received[0].tls and sink.recipients == ["r@far.example"]


@pytest.mark.parametrize("problem", ["no-starttls", "untrusted", "bad-password"])
async def test_required_tls_problems_defer(pool: asyncpg.Pool, ours: int, sinks, clock: Clock,
                                           ca: trustme.CA, tmp_path: Path, problem: str) -> None:
    other_ca = trustme.CA()
    tls = None if problem == "no-starttls" else _server_ctx(other_ca if problem == "untrusted" else ca)
    sink = await sinks(tls=tls, auth=("u", "right") if problem == "bad-password" else None)
    password = "wrong" if problem == "bad-password" else "right"
    qid = await submit(pool, "r@far.example")
    ob = outbound(pool, clock, tls_ca_file=_ca_file(ca, tmp_path),
                  transports={"far.example": f"smtp+starttls://u:{password}@localhost:{sink.port}"})
    await ob.run_once()
    assert sink.received == []
    row = await pool.fetchrow("SELECT status, status_code FROM queue_recipients WHERE queue_id=$1", qid)
    assert row["status"] == "deferred" and row["status_code"].startswith("4.7.")
    assert ob.breaker.state(f"localhost:{sink.port}") == "closed"  # our policy, not the host's health


async def test_tls_contexts_are_made_once_and_the_opportunistic_one_loads_no_cas(ca: trustme.CA,
                                                                               tmp_path: Path) -> None:
    from smtp_out.client import tls_context

    loose = await tls_context(False)
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    assert loose.cert_store_stats()["x509"] == 0  # nothing read from disk (on the event loop) for it
    strict = await tls_context(True, _ca_file(ca, tmp_path))
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.cert_store_stats()["x509_ca"] == 1  # our test CA, loaded (in a thread)
    assert await tls_context(True, _ca_file(ca, tmp_path)) is strict
    assert await tls_context(False) is loose


_TLS_OFFERED = [b"PIPELINING", b"STARTTLS", b"8BITMIME"]
# What a broken server does with STARTTLS: refuse it, or say yes and then fail the handshake.
_BROKEN_STARTTLS = {
    "refused": b"454 4.7.0 TLS not available due to temporary reason\r\n",
    "garbage": b"220 2.0.0 ready\r\nTHIS IS NOT A SERVER HELLO\r\n",
    "hangup": b"220 2.0.0 ready\r\n",  # and then closes: scripted below
}


@pytest.mark.parametrize("failure", list(_BROKEN_STARTTLS))
async def test_opportunistic_tls_failure_falls_back_to_plaintext(pool: asyncpg.Pool, ours: int, mta,
                                                                 clock: Clock, failure: str) -> None:
    """Opportunistic TLS is a bonus, not a condition (RFC 3207 §4, RFC 7435): a server whose STARTTLS
    is refused or whose handshake fails still gets the message, in plaintext, in the same run (it used
    to be deferred, again and again, until the message expired and bounced). A refusal goes on in the
    same session; a failed handshake leaves none, so a new one without STARTTLS follows at once."""
    reply = _BROKEN_STARTTLS[failure]
    if failure == "hangup":
        async def reply(writer) -> None:  # type: ignore[no-redef]
            writer.write(_BROKEN_STARTTLS["hangup"])
            await writer.drain()
            writer.close()
    server = await mta(replies={"STARTTLS": reply}, extensions=_TLS_OFFERED)
    qid = await submit(pool, "r@far.example")
    ob = outbound(pool, clock, transports={"far.example": f"smtp://127.0.0.1:{server.port}"},
                  connect_timeout=2, command_timeout=2)
    assert await ob.run_once() == 1
    assert len(server.delivered) == 1
    assert await pool.fetchval("SELECT count(*) FROM queue_recipients WHERE queue_id=$1", qid) == 0
    assert [c for c in server.commands if c.upper().startswith(b"STARTTLS")] == [b"STARTTLS\r\n"]  # tried once
    assert server.connections == (1 if failure == "refused" else 2)


@pytest.mark.parametrize("failure", list(_BROKEN_STARTTLS)[:2])
async def test_required_tls_failure_never_falls_back(pool: asyncpg.Pool, ours: int, mta, clock: Clock,
                                                     failure: str) -> None:
    """The fallback is for opportunistic TLS only: a hop that requires TLS defers (4.7.x) instead."""
    server = await mta(replies={"STARTTLS": _BROKEN_STARTTLS[failure]}, extensions=_TLS_OFFERED)
    qid = await submit(pool, "r@far.example")
    ob = outbound(pool, clock, transports={"far.example": f"smtp+starttls://localhost:{server.port}"},
                  connect_timeout=2, command_timeout=2)
    await ob.run_once()
    assert server.delivered == [] and server.connections == 1
    row = await pool.fetchrow("SELECT status, status_code FROM queue_recipients WHERE queue_id=$1", qid)
    assert row["status"] == "deferred" and row["status_code"] == "4.7.5"
