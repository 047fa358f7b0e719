"""After Redis restarts, every pooled connection is dead; the first command on each must not
fail (a service that is fine would otherwise fail open or closed once per connection)."""

from __future__ import annotations

import asyncio

from cnop.core.redis import make_redis

from tests.conftest import free_port, start_redis


async def test_the_first_command_after_a_redis_restart_succeeds() -> None:
    port = free_port()
    server = start_redis(port)
    client = make_redis(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    try:
        assert await client.set("k", "before") is True
        server.kill()
        server.wait(10)
        server = start_redis(port)
        await asyncio.sleep(0.2)
        # The pooled connection died with the old server; one retry opens a fresh one.
        assert await client.mget(["k", "other"]) == [None, None]
    finally:
        await client.aclose()
        server.kill()
        server.wait(10)
