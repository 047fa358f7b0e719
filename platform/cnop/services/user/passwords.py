"""argon2id password hashing, with a dummy hash so an unknown user costs as much as a known one.

Verifying against the dummy hash when the username does not exist keeps login time the same for
both cases, so timing does not tell an attacker which usernames are registered.

At most ``max_concurrent`` hashes run at once: each holds ``memory_cost_kib`` of memory, and
the thread pool would otherwise run 40 (760 MiB at 19 MiB), which a burst of logins turns into
an out-of-memory kill of a container with a memory limit. On 2 cores more hashes at once are
not faster anyway; the others wait their turn, but only as long as the request's deadline still
leaves time for the hash itself. Past that, :class:`PasswordsBusy`: the service answers (429)
while its caller still listens, instead of hashing for a caller who gave up, and a burst of
logins never turns into gateway timeouts, which would count against the breaker every user shares.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.concurrency import run_in_threadpool

from cnop.core import deadline

# Weight of the newest hash in the running estimate of how long one takes.
_SMOOTHING = 0.2


class PasswordsBusy(Exception):
    """No hashing slot came free while the request's deadline still left time for the hash."""


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
        # Same parameters as real hashes, for a password nobody knows; timing it gives the
        # first estimate of what one hash costs on this machine.
        started = time.monotonic()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        self.typical_seconds = time.monotonic() - started

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A hashing slot, waited for only while the deadline leaves room for a hash after it."""
        if self._slots.locked():
            wait = deadline.step_budget(math.inf) - self.typical_seconds
            if wait <= 0:
                raise PasswordsBusy
            try:
                async with asyncio.timeout(None if math.isinf(wait) else wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise PasswordsBusy from None
        else:
            await self._slots.acquire()
        started = time.monotonic()
        try:
            yield
        finally:
            self._slots.release()
            took = time.monotonic() - started
            self.typical_seconds += _SMOOTHING * (took - self.typical_seconds)

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await run_in_threadpool(self._hasher.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Check a password; with no stored hash, burn the same time and answer False."""
        async with self._slot():
            if stored_hash is None:
                await run_in_threadpool(self._hasher.verify, password, self._dummy)
                return False
            try:
                return await run_in_threadpool(self._hasher.verify, password, stored_hash)
            except Exception:  # a corrupt stored hash must read as "wrong password", not a 500
                return False
