"""Transcripts of the any-state and not-authenticated commands over a real store."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from config.settings import RedisSettings
from imap import replies
from tests.imap.conftest import PASSWORD, USER, World, make_settings


async def test_greeting_carries_capabilities(world: World) -> None:
    c = await world.client(login=False)
    await c.session.greet()
    greeting = c.transport.take().decode()
    assert greeting.startswith("* OK [CAPABILITY IMAP4rev1 ")
    for cap in ("IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "ID", "ENABLE", "LITERAL+", "UNSELECT",
                "CHILDREN", "SASL-IR", "AUTH=PLAIN"):
        assert f" {cap}" in greeting


async def test_login_ok_carries_capabilities(world: World) -> None:
    c = await world.client(login=False)
    out = await c(f'a LOGIN {USER} "{PASSWORD}"')
    assert out.startswith("a OK [CAPABILITY IMAP4rev1 ") and "AUTH=PLAIN" not in out


async def test_login_disabled_without_tls(world: World) -> None:
    c = await world.client(login=False, settings=make_settings(allow_plaintext_auth=False))
    assert "LOGINDISABLED" in await c("a CAPABILITY")
    out = await c(f'b LOGIN {USER} "{PASSWORD}"')
    assert out == replies.PRIVACY_REQUIRED.encode("b").decode()


async def test_plaintext_only_from_loopback(world: World) -> None:
    c = await world.client(login=False, peer="192.0.2.1")
    assert "LOGINDISABLED" in await c("a CAPABILITY")


async def test_bad_password_is_refused(world: World) -> None:
    c = await world.client(login=False)
    assert await c(f'a LOGIN {USER} "wrong"') == replies.AUTH_FAILED.encode("a").decode()
    assert await c('b LOGIN nobody@example.test "x"') == replies.AUTH_FAILED.encode("b").decode()


@pytest.mark.parametrize("redis", ["", "redis://127.0.0.1:6379/0"])  # the failure counters in process or in Redis
async def test_login_with_bytes_that_are_not_utf8_is_a_failed_login(world: World, redis: str) -> None:
    # A literal may carry any 8-bit bytes; no account's name or password is such bytes. These were
    # NO [SERVERBUG] (argon2 and Redis could not encode them) with a traceback in the log.
    settings = make_settings()
    c = await world.client(login=False, settings=dataclasses.replace(settings, redis=RedisSettings(url=redis)))
    name = USER.encode()
    out = await c(b"a LOGIN {%d+}\r\n%s\xff \"x\"" % (len(name) + 1, name))
    assert out == replies.AUTH_FAILED.encode("a").decode()
    shared = c.session.ctx.guard.limits.redis
    # the name reached Redis as text: an encoding error there would have counted as Redis being down,
    # and every instance would have kept its own counts (retry_after seconds) for one such attempt
    assert shared is None or shared.available
    out = await c(b"b LOGIN " + name + b" {5+}\r\n" + PASSWORD.encode()[:4] + b"\xe9")
    assert out == replies.AUTH_FAILED.encode("b").decode()
    assert (await c(f'c LOGIN {USER} "{PASSWORD}"')).startswith("c OK")


async def test_authenticate_plain_two_steps_and_sasl_ir(world: World) -> None:
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    c = await world.client(login=False)
    assert await c("a authenticate PLAIN") == "+ \r\n"
    assert (await c(token)).startswith("a OK [CAPABILITY")
    c = await world.client(login=False)
    assert (await c(f"a AUTHENTICATE PLAIN {token}")).startswith("a OK")
    c = await world.client(login=False)
    await c("a AUTHENTICATE PLAIN")
    assert await c("*") == replies.AUTH_CANCELLED.encode("a").decode()
    assert (await c("b NOOP")).startswith("b OK")


async def test_commands_need_the_right_state(world: World) -> None:
    c = await world.client(login=False)
    assert await c("a SELECT INBOX") == replies.WRONG_STATE.encode("a").decode()
    c = await world.client()
    assert await c("a FETCH 1 FLAGS") == replies.WRONG_STATE.encode("a").decode()
    assert await c(f'b LOGIN {USER} "{PASSWORD}"') == replies.WRONG_STATE.encode("b").decode()


async def test_bad_commands_before_auth_close_the_session(world: World) -> None:
    c = await world.client(login=False)
    for i in range(4):
        assert "BAD" in await c(f"x{i} FROB")
    out = await c("x5 FROB")
    assert "* BYE" in out and c.transport.closed


async def test_bad_after_auth_keeps_session(world: World) -> None:
    c = await world.client()
    for i in range(10):
        assert "BAD" in await c(f"x{i} FROB")
    assert (await c("n NOOP")).startswith("n OK")


async def test_id_namespace_enable_logout(world: World) -> None:
    c = await world.client()
    out = await c('a ID ("name" "Thunderbird" "version" "153.8.0")')
    assert out.startswith('* ID ("name" "mailserver"') and "a OK" in out
    assert await c("b NAMESPACE") == '* NAMESPACE (("" "/")) NIL NIL\r\nb OK NAMESPACE completed\r\n'
    assert (await c("c ENABLE CONDSTORE")).startswith("* ENABLED\r\nc OK")
    out = await c("d LOGOUT")
    assert out == "* BYE logging out\r\nd OK LOGOUT completed\r\n" and c.transport.closed


async def test_small_literals_before_auth(world: World) -> None:
    c = await world.client(login=False)
    assert "TOOBIG" in (await c("a LOGIN {100000}")) and not c.transport.closed
    out = await c(b"b LOGIN {%d}" % len(USER))
    assert out.startswith("+ ")
    out = await c(USER.encode() + b' "' + PASSWORD.encode() + b'"')
    assert out.startswith("b OK")
