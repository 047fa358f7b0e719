"""A real platform for tests that drive it from outside: ``lab up`` in a temporary sandbox on
shifted ports, stopped with ``lab down`` afterwards. Used by the end-to-end drills (tests/e2e)
and the API fuzzing suite (tests/fuzz), each with its own sandbox."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scenarios.accounts import registration_body
from tests.conftest import sandbox_port_offset

LAB = str(Path(sys.executable).parent / "lab")
_next_ip = itertools.count(10)


@dataclass(frozen=True)
class Sandbox:
    home: Path
    env: dict[str, str]
    offset: int
    gateway: str
    prometheus: str
    startup_seconds: float

    def lab(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LAB, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def client(self, ip: str | None = None, timeout: float = 15.0) -> httpx.AsyncClient:
        """A client whose requests come from their own loopback address."""
        address = ip or next_ip()
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(
            base_url=self.gateway,
            transport=transport,
            timeout=timeout,
            limits=httpx.Limits(max_connections=100),
        )


def register_account(gateway: str, prefix: str = "tester") -> tuple[str, str]:
    """A new account through the public API (a user would do the same); its name and password."""
    suffix = secrets.token_hex(4)
    username, password = f"{prefix}_{suffix}", f"{prefix.title()}-{suffix}1"
    body = registration_body(username, password, first_name="Test", last_name=prefix.title())
    created = httpx.post(f"{gateway}/api/v1/auth/register", json=body, timeout=15)
    assert created.status_code == 201, created.text
    return username, password


def login_status(gateway: str, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    return httpx.post(f"{gateway}/api/v1/auth/login", json=body, timeout=15).status_code


def next_ip() -> str:
    """A loopback address no other test of this session uses (the per-IP limits are real)."""
    n = next(_next_ip)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@contextmanager
def lab_sandbox(
    home: Path,
    first_offset: int,
    service_env: dict[str, str] | None = None,
    up_args: tuple[str, ...] = (),
    up_timeout: float = 60.0,
) -> Iterator[Sandbox]:
    """``lab up`` (local runtime) at the first free port offset from ``first_offset``;
    ``service_env`` reaches every service (``CNOP_LAB_SERVICE_ENV``), ``up_args`` are more
    arguments of `lab up` (``("--flaw", "bola")``, ``("--assignment", FILE)``); ``up_timeout``
    is ``lab up --timeout``."""
    offset = sandbox_port_offset(first_offset)
    env = {
        **os.environ,
        "CNOP_LAB_HOME": str(home),
        "CNOP_LAB_PORT_OFFSET": str(offset),
        "CNOP_LAB_RUNTIME": "local",
    }
    if service_env:
        env["CNOP_LAB_SERVICE_ENV"] = json.dumps(service_env)
    started = time.perf_counter()
    up = subprocess.run(
        [LAB, "up", "--runtime", "local", "--timeout", str(up_timeout), *up_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=up_timeout + 60,
    )
    elapsed = time.perf_counter() - started
    if up.returncode != 0:
        subprocess.run([LAB, "down"], env=env, capture_output=True, timeout=60, check=False)
        pytest.fail(f"lab up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    box = Sandbox(
        home=home,
        env=env,
        offset=offset,
        gateway=f"http://127.0.0.1:{8080 + offset}",
        prometheus=f"http://127.0.0.1:{9090 + offset}",
        startup_seconds=elapsed,
    )
    print(f"\nlab up: ready in {elapsed:.1f} s")
    try:
        yield box
    finally:
        down = subprocess.run([LAB, "down"], env=env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
