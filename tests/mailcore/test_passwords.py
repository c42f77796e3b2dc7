"""The cache of successful password verifications: what it answers, and what it must never answer."""

from __future__ import annotations

import pytest

from mailcore import passwords
from mailcore.passwords import VerifiedCache, hash_password_sync, verify_password

HASH_A = hash_password_sync("right horse")
HASH_B = hash_password_sync("battery staple")


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    passwords.configure_cache(8)


async def test_a_success_is_remembered_and_answers_the_same_pair() -> None:
    assert await verify_password(HASH_A, "right horse")
    assert passwords._CACHE.hit(HASH_A, "right horse")
    assert await verify_password(HASH_A, "right horse")


@pytest.mark.parametrize(("stored", "password"), [
    (HASH_A, "wrong horse"),        # a wrong guess
    (HASH_A, "right horse "),       # near miss
    (HASH_B, "right horse"),        # the password changed: a new stored hash
    (None, "right horse"),          # the account is gone
])
async def test_only_the_exact_pair_that_verified_is_answered(stored: str | None, password: str) -> None:
    assert await verify_password(HASH_A, "right horse")
    assert not await verify_password(stored, password)
    assert not (stored is not None and passwords._CACHE.hit(stored, password))


async def test_failures_are_never_cached() -> None:
    for _ in range(3):
        assert not await verify_password(HASH_A, "guess")
    assert len(passwords._CACHE) == 0


async def test_size_zero_turns_it_off() -> None:
    passwords.configure_cache(0)
    assert await verify_password(HASH_A, "right horse")
    assert len(passwords._CACHE) == 0 and not passwords._CACHE.hit(HASH_A, "right horse")


def test_least_recently_used_pair_goes_first() -> None:
    cache = VerifiedCache(2)
    cache.add("h1", "p1")
    cache.add("h2", "p2")
    assert cache.hit("h1", "p1")  # h1 is now the most recent
    cache.add("h3", "p3")
    assert cache.hit("h1", "p1") and cache.hit("h3", "p3") and not cache.hit("h2", "p2")


def test_the_cache_holds_no_password() -> None:
    cache = VerifiedCache(4)
    cache.add("stored-hash", "s3cret-password")
    held = b"".join(cache._entries)
    assert b"s3cret" not in held and b"stored-hash" not in held
    # Keyed per process: another cache (another process) cannot tell the same pair from its digest.
    assert VerifiedCache(4)._digest("stored-hash", "s3cret-password") not in cache._entries
