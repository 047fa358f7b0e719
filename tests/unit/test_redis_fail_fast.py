"""A Redis that cannot be reached costs one dial per interval, not a timeout per command.

On Docker the name ``redis`` stops resolving while its container is down and lookups hang; a
listener whose accept queue is full makes a dial hang the same way, on any Linux machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from cnop.core.redis import (
    FAILED_DIALS_BEFORE_FAIL_FAST,
    REDIAL_AFTER_SECONDS,
    REDIS_DOWN_ERRORS,
    DialGate,
    make_redis,
)
from redis.asyncio import Redis

from tests.conftest import free_port, start_redis

TIMEOUT = 0.5


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port whose dials hang: its listener never accepts and its queue is full."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for sock in (*fillers, server):
        sock.close()


async def _failing_call(client: Redis) -> float:
    began = time.perf_counter()
    with pytest.raises(REDIS_DOWN_ERRORS):
        await client.get("k")
    return time.perf_counter() - began


async def test_after_a_hanging_dial_a_burst_of_calls_fails_at_once(hanging_port: int) -> None:
    client = make_redis(f"redis://127.0.0.1:{hanging_port}/0", timeout=TIMEOUT)
    try:
        # The first failed dials each cost their timeout, no more.
        for _ in range(FAILED_DIALS_BEFORE_FAIL_FAST):
            first = await _failing_call(client)
            assert first < TIMEOUT * 2 + 0.3, first
        burst = [await _failing_call(client) for _ in range(20)]
        # Without the gate each call waits its whole connect timeout (20 x 0.5 s): no call may
        # take that long, and all twenty together take less than two would (at once is ~ms;
        # the rest is room for a loaded machine).
        assert max(burst) < TIMEOUT and sum(burst) < 2 * TIMEOUT, burst
        # Concurrent callers too: none of them dials.
        began = time.perf_counter()
        results = await asyncio.gather(
            *(client.get("k") for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, REDIS_DOWN_ERRORS) for r in results)
        assert time.perf_counter() - began < TIMEOUT  # a dial would hang for all of it
    finally:
        await client.aclose()


async def test_an_unresolvable_name_fails_within_the_timeout_then_at_once() -> None:
    client = make_redis("redis://cnop-no-such-redis.invalid:6379/0", timeout=TIMEOUT)
    try:
        for _ in range(FAILED_DIALS_BEFORE_FAIL_FAST):
            assert await _failing_call(client) < TIMEOUT * 2 + 0.3
        burst = [await _failing_call(client) for _ in range(20)]
        assert max(burst) < TIMEOUT and sum(burst) < 2 * TIMEOUT, burst
    finally:
        await client.aclose()


async def test_a_redis_that_comes_back_is_used_within_the_redial_interval() -> None:
    port = free_port()
    client = make_redis(f"redis://127.0.0.1:{port}/0", timeout=TIMEOUT)
    server = None
    try:
        for _ in range(FAILED_DIALS_BEFORE_FAIL_FAST):
            await _failing_call(client)  # nothing listens: refused, then the gate closes
        server = start_redis(port)
        began = time.perf_counter()
        while True:
            try:
                assert await client.set("k", "v") is True
                break
            except REDIS_DOWN_ERRORS:
                assert time.perf_counter() - began < REDIAL_AFTER_SECONDS + 1.0
                await asyncio.sleep(0.02)
        # Closed again: every call dials or reuses a connection as usual.
        assert await client.get("k") == "v"
    finally:
        await client.aclose()
        if server is not None:
            server.kill()
            server.wait(10)


def test_one_failed_dial_among_good_ones_does_not_close_the_gate() -> None:
    """Under load one dial can miss its timeout while Redis is fine: the next still dials."""
    gate = DialGate()
    for _ in range(FAILED_DIALS_BEFORE_FAIL_FAST - 1):
        gate.failed()
        gate.admit()
    gate.succeeded()
    for _ in range(FAILED_DIALS_BEFORE_FAIL_FAST - 1):
        gate.failed()
    gate.admit()
    gate.failed()
    with pytest.raises(REDIS_DOWN_ERRORS):
        gate.admit()
