"""A platform for the security track's end-to-end tests: its own ``lab up`` (local runtime),
hardened, shared by the scans of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox import Sandbox, lab_sandbox

FIRST_OFFSET = 20000 + 97 * 20


@pytest.fixture(scope="module")
def security_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with lab_sandbox(tmp_path_factory.mktemp("security-home"), FIRST_OFFSET) as box:
        yield box
