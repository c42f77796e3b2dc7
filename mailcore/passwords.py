"""Password hashing with argon2id, always off the event loop, and a cache of recent successful logins.

Owns the hash format and the verification timing. Hashing costs tens of milliseconds of CPU on purpose,
so both functions run in a worker thread: the event loop never waits on them. The threads are this
module's own, one per core: a burst of logins (every mail client reconnecting at once, a password-guessing
run) queues for them instead of filling the event loop's default executor, which SPF and DKIM checks and
MIME parsing share; and at most that many argon2 memory blocks (19 MiB each, which a thread's malloc
arena keeps after use) exist at once, so memory after a burst is bounded by the cores, not the burst.

That cost is meant for attackers guessing, not for a user's mail client logging in again with the
right password (Thunderbird opens several IMAP connections and one SMTP connection per message sent).
`VerifiedCache` remembers, per process, that a (stored hash, password) pair verified, as a keyed hash
(HMAC-SHA256 under a random per-process key, so the cache holds no password and nothing that outlives
the process); the same pair verifies again without argon2. The stored hash is part of the key, so a
changed password or a removed account is never answered from it. Failures are never cached: every
wrong guess still costs the full argon2 time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import os
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP-recommended argon2id parameters (m=19 MiB, t=2, p=1).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A real hash of a random string: verifying against it when the user does not exist costs the same time,
# so response timing does not tell which accounts exist.
_DUMMY = _HASHER.hash("no such account: constant-time decoy")
# One per core (two at least): more would only interleave the hashes, each as slow and all finished later,
# and hold more memory blocks.
HASH_THREADS = max(2, os.cpu_count() or 1)
_HASHING = concurrent.futures.ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="argon2")


def hash_password_sync(password: str) -> str:
    """Hash a password (blocking; for the command line)."""
    return _HASHER.hash(password)


async def hash_password(password: str) -> str:
    """Hash a password on a hashing thread."""
    return await asyncio.get_running_loop().run_in_executor(_HASHING, _HASHER.hash, password)


def _secret(password: str) -> bytes:
    """A password as the bytes argon2 and the cache see. A password read from 8-bit IMAP literal bytes
    that are not UTF-8 arrives surrogate-escaped, which strict UTF-8 cannot encode; surrogatepass encodes
    any str, and those bytes match no hash of a text password, as they should not."""
    return password.encode("utf-8", "surrogatepass")


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY, _secret(password)) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class VerifiedCache:
    """Recent (stored hash, password) pairs that verified, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, None] = OrderedDict()

    def _digest(self, stored: str, password: str) -> bytes:
        return hmac.new(self._key, stored.encode() + b"\0" + _secret(password),
                        hashlib.sha256).digest()

    def hit(self, stored: str, password: str) -> bool:
        """Whether this pair verified recently (about 2 µs: fine on the event loop)."""
        if not self.size:
            return False
        digest = self._digest(stored, password)
        if digest not in self._entries:
            return False
        self._entries.move_to_end(digest)
        return True

    def add(self, stored: str, password: str) -> None:
        """Remember a pair that argon2 verified."""
        if not self.size:
            return
        self._entries[self._digest(stored, password)] = None
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# The process's cache; `configure_cache` sizes it from the settings at start (0 turns it off).
_CACHE = VerifiedCache(1024)


def configure_cache(size: int) -> None:
    """Replace the process's cache of successful verifications by an empty one of `size` entries."""
    global _CACHE
    _CACHE = VerifiedCache(size)


async def verify_password(stored: str | None, password: str) -> bool:
    """Check a password against a stored hash (None: no such account, still spends the time). A pair
    that verified recently is answered from the cache, without argon2."""
    if stored is not None and _CACHE.hit(stored, password):
        return True
    ok = await asyncio.get_running_loop().run_in_executor(_HASHING, _verify, stored, password)
    if ok and stored is not None:
        _CACHE.add(stored, password)
    return ok
