"""argon2id password hashing, with a dummy hash so an unknown user costs as much as a known one.

Verifying against the dummy hash when the username does not exist keeps login time the same for
both cases, so timing does not tell an attacker which usernames are registered.

At most ``max_concurrent`` hashes run at once: each holds ``memory_cost_kib`` of memory, and
the thread pool would otherwise run 40 (760 MiB at 19 MiB), which a burst of logins turns into
an out-of-memory kill of a container with a memory limit. On 2 cores more hashes at once are
not faster anyway; the others wait their turn, within the request's deadline.
"""

from __future__ import annotations

import asyncio
import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.concurrency import run_in_threadpool


class Passwords:
    def __init__(
        self, *, time_cost: int, memory_cost_kib: int, parallelism: int, max_concurrent: int = 4
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
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
        async with self._slots:
            return await run_in_threadpool(self._hasher.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Check a password; with no stored hash, burn the same time and answer False."""
        async with self._slots:
            if stored_hash is None:
                await run_in_threadpool(self._hasher.verify, password, self._dummy)
                return False
            try:
                return await run_in_threadpool(self._hasher.verify, password, stored_hash)
            except Exception:  # a corrupt stored hash must read as "wrong password", not a 500
                return False
