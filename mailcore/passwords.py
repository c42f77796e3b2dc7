"""Password hashing with argon2id, always off the event loop.

Owns the hash format and the verification timing. Hashing costs tens of milliseconds of CPU on purpose,
so both functions run in a worker thread: the event loop never waits on them.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP-recommended argon2id parameters (m=19 MiB, t=2, p=1).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A real hash of a random string: verifying against it when the user does not exist costs the same time,
# so response timing does not tell which accounts exist.
_DUMMY = _HASHER.hash("no such account: constant-time decoy")


def hash_password_sync(password: str) -> str:
    """Hash a password (blocking; for the command line)."""
    return _HASHER.hash(password)


async def hash_password(password: str) -> str:
    """Hash a password in a worker thread."""
    return await asyncio.to_thread(_HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Check a password against a stored hash (None: no such account, still spends the time)."""
    return await asyncio.to_thread(_verify, stored, password)
