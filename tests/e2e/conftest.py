"""A real platform for end-to-end tests: ``lab up`` in a temporary sandbox on shifted ports.

One sandbox per test session (start-up costs seconds); tests keep out of each other's way by
using their own users and their own loopback source address (127.0.0.N), since the gateway's
per-IP limits and login blocks are real.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox import LAB, Sandbox, lab_sandbox, next_ip

__all__ = ["LAB", "PORT_OFFSET", "Sandbox", "next_ip"]

PORT_OFFSET = 20000


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with lab_sandbox(tmp_path_factory.mktemp("lab-home"), PORT_OFFSET) as box:
        yield box
