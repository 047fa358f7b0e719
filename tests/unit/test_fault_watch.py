"""A fault flag's start and end show in the log and the gauge when they happen, not at the
next request: a lab reads ``fault_cleared`` right after its drill, when no request may have
reached the service since the flag went away (real Redis)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from cnop.core.faults import FaultFlags, fault_key
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tests.conftest import eventually


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(r, "event", "")
        for r in caplog.records
        if getattr(r, "event", "").startswith("fault_") and r.name.startswith("cnop")
    ]


def test_a_cleared_fault_is_logged_and_unset_without_any_request(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = "watchtest"

    def gauge() -> float | None:
        return REGISTRY.get_sample_value(
            "cnop_fault_active", {"service": service, "fault": "latency"}
        )

    async def scenario() -> list[str]:
        redis = Redis.from_url(redis_url)
        flags = FaultFlags(redis, service, enabled=True, refresh_seconds=0.05)
        watcher = asyncio.create_task(flags.watch())
        try:
            await redis.set(fault_key(service, "latency"), json.dumps({"ms": 10}), ex=60)
            assert await eventually(lambda: gauge() == 1)
            await redis.delete(fault_key(service, "latency"))
            assert await eventually(lambda: gauge() == 0)
        finally:
            watcher.cancel()
            await redis.aclose()
        return _events(caplog)

    with caplog.at_level(logging.INFO, logger="cnop"):
        events = asyncio.run(scenario())
    assert events == ["fault_injected", "fault_cleared"]


def test_disabled_flags_watch_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        redis = Redis.from_url(redis_url)
        try:
            await asyncio.wait_for(
                FaultFlags(redis, "off", enabled=False, refresh_seconds=0.05).watch(), 1
            )
        finally:
            await redis.aclose()

    asyncio.run(scenario())  # returns at once instead of polling Redis forever
