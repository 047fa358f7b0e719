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

That memory goes back to the system when each hash ends (:func:`return_hash_memory`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import os
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


# glibc's mallopt parameter, and its own starting value for it.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024


def return_hash_memory() -> bool:
    """Keep glibc from holding on to each hash's memory after it ends; True when in force.

    argon2 takes its ``memory_cost_kib`` (19 MiB) from malloc. glibc serves a block that large
    with mmap, and gives it back when freed, but then raises its mmap threshold to that size:
    later blocks come from the hashing threads' own arenas and stay with the process. One burst
    of logins left the user service 76 MiB larger for good (4 slots of 19 MiB). A fixed
    threshold keeps such blocks mmapped, so each goes back when its hash ends. Other C
    libraries do not grow a threshold; nothing to do there.
    """
    if not hasattr(os, "confstr") or not _glibc():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


class PasswordsBusy(Exception):
    """No hashing slot came free while the request's deadline still left time for the hash."""


class Passwords:
    def __init__(
        self, *, time_cost: int, memory_cost_kib: int, parallelism: int, max_concurrent: int = 4
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        return_hash_memory()
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
