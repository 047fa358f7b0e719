"""Real dependencies for the tests: a redis-server and a moto DynamoDB server per test session,
on free ports, so parallel sessions (and a running ``lab up``) never collide."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cnop.core.internal import internal_headers
from fastapi import FastAPI
from redis import Redis

TEST_SECRET = "test-secret-" + "x" * 40
TEST_INTERNAL_SECRET = "test-internal-secret-" + "y" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _ephemeral_port_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def sandbox_port_offset(start: int) -> int:
    """A port offset at which every port of a lab sandbox is free AND below the kernel's
    ephemeral range: outgoing connections (the sandbox's own services connecting to Redis
    included) take ephemeral ports, and one could grab a service's port as it starts."""
    from scenarios.config import LabConfig

    base = LabConfig(home=Path("/nonexistent"), port_offset=0)
    ports = [*base.ports().values(), *base.metrics_ports().values()]
    ceiling = _ephemeral_port_floor()
    for offset in range(start, ceiling, 97):
        if max(ports) + offset >= ceiling:
            break
        if all(_port_free(p + offset) for p in ports):
            return offset
    raise RuntimeError(f"no free port range for a sandbox from offset {start}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def serve_in_thread(app: Any, lifespan: str = "off") -> Iterator[str]:
    """A real HTTP server for a stand-in upstream, on a free port, stopped afterwards."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A throw-away redis-server on ``port`` (no persistence), for tests that stop and start
    Redis themselves; the caller terminates it."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=10)
    return proc


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        # Our wrapper: moto serialised, so transactions are isolated as in DynamoDB.
        [sys.executable, "-m", "cnop.core.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def service_env(redis_url: str, dynamodb_endpoint: str, redis_sync: Redis) -> dict[str, Any]:
    """Settings shared by every service under test; a fresh table prefix per test."""
    return {
        "jwt_secret": TEST_SECRET,
        "internal_secret": TEST_INTERNAL_SECRET,
        "redis_url": redis_url,
        "dynamodb_endpoint": dynamodb_endpoint,
        "table_prefix": "t" + secrets.token_hex(4),
        "fault_refresh_seconds": 0,
        "log_level": "WARNING",
    }


async def eventually(predicate: Callable[[], Any], seconds: float = 10.0) -> bool:
    """Poll until ``predicate()`` is truthy: a fixed sleep flakes on a loaded CI machine."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def running(
    app: FastAPI, base_url: str = "http://testserver", *, internal: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give a client that talks to it in-process.

    The client speaks as the platform does (it sends the app's internal credential), since a
    backend answers nothing else; ``internal=False`` is a stranger calling the port directly.
    """
    headers = internal_headers(app.state.ctx.settings) if internal else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=headers
        ) as client:
            yield client


@pytest.fixture
def app_client() -> Callable[..., Any]:
    return running


def assert_no_leak(body: str) -> None:
    """No traceback, exception class name or hostname in what a client sees."""
    for marker in ("Traceback", 'File "', "Error:", "Exception", socket.gethostname(), "/work/"):
        assert marker not in body, f"leaked {marker!r} in {body[:200]!r}"
