"""After Redis restarts, every pooled connection is dead; the first command on each must not
fail (a service that is fine would otherwise fail open or closed once per connection)."""

from __future__ import annotations

import asyncio
import subprocess

from cnop.core.redis import make_redis

from tests.conftest import free_port, wait_for_port


def _redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=10)
    return proc


async def test_the_first_command_after_a_redis_restart_succeeds() -> None:
    port = free_port()
    server = _redis(port)
    client = make_redis(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    try:
        assert await client.set("k", "before") is True
        server.kill()
        server.wait(10)
        server = _redis(port)
        await asyncio.sleep(0.2)
        # The pooled connection died with the old server; one retry opens a fresh one.
        assert await client.mget(["k", "other"]) == [None, None]
    finally:
        await client.aclose()
        server.kill()
        server.wait(10)
