"""The cache of successful password verifications: what it answers, and what it must never answer."""

from __future__ import annotations

import asyncio
import os
import threading

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


async def test_a_burst_of_logins_hashes_on_its_own_bounded_threads() -> None:
    """Wrong guesses (never cached: each costs a full argon2) far more than the machine's cores: they run
    on the module's hashing threads, never more of them than HASH_THREADS (each keeps an argon2 memory
    block), and none of them on the default executor."""
    burst = [asyncio.ensure_future(verify_password(HASH_A, f"guess {i}")) for i in range(3 * passwords.HASH_THREADS)]
    assert not any(await asyncio.gather(*burst))
    hashing = [t for t in threading.enumerate() if t.name.startswith("argon2")]
    assert 1 <= len(hashing) <= passwords.HASH_THREADS


async def test_the_default_executor_stays_free_during_a_burst() -> None:
    """A job for the default executor (where DNS-bound SPF/DKIM checks and MIME parsing run) submitted
    after a burst of guesses four times its size runs while most of the burst is still waiting: with
    the hashes on the default executor it would queue behind nearly all of them."""
    default_threads = min(32, (os.cpu_count() or 1) + 4)
    burst = [asyncio.ensure_future(verify_password(HASH_A, f"guess {i}")) for i in range(4 * default_threads)]
    await asyncio.sleep(0)  # every verification is submitted before the job below
    async with asyncio.timeout(60):
        await asyncio.to_thread(lambda: None)
        waiting = sum(not f.done() for f in burst)
        await asyncio.gather(*burst)
    assert waiting > len(burst) // 2
