"""argon2id password hashing, with a dummy hash so an unknown user costs as much as a known one.

Verifying against the dummy hash when the username does not exist keeps login time the same for
both cases, so timing does not tell an attacker which usernames are registered.
"""

from __future__ import annotations

import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.concurrency import run_in_threadpool


class Passwords:
    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
                ),
            )
        )
        # Same parameters as real hashes, for a password nobody knows.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        return await run_in_threadpool(self._hasher.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Check a password; with no stored hash, burn the same time and answer False."""
        if stored_hash is None:
            await run_in_threadpool(self._hasher.verify, password, self._dummy)
            return False
        try:
            return await run_in_threadpool(self._hasher.verify, password, stored_hash)
        except Exception:  # a corrupt stored hash must read as "wrong password", not a 500
            return False
