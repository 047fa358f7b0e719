"""One Docker sandbox per test session: ``DockerRuntime.up()`` in a temporary home.

The stack runs as its own compose project on free ports, so it never meets a learner's sandbox.
Without a usable Docker engine these tests skip, unless ``CNOP_REQUIRE_DOCKER=1`` (CI's
scripts/ci-docker.sh sets it), where a missing engine is a failure, not a silent skip.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scenarios import images
from scenarios.config import REPO_ROOT, LabConfig
from scenarios.runtime.base import Endpoints, RuntimeError_
from scenarios.runtime.docker import DockerRuntime
from tests.conftest import sandbox_port_offset

UP_BUDGET_SECONDS = float(os.environ.get("CNOP_DOCKER_UP_BUDGET", "60"))


@dataclass
class DockerSandbox:
    runtime: DockerRuntime
    endpoints: Endpoints
    project: str
    up_seconds: float
    down_done: bool = False


def _docker_state() -> str | None:
    """None when Docker is usable with its images, else why not."""
    try:
        images.docker_available()
    except RuntimeError_ as exc:
        return str(exc)
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=15, check=False
    )
    if probe.returncode != 0:
        return "the docker compose plugin is missing"
    return None


def project_leftovers(project: str) -> dict[str, list[str]]:
    def names(*cmd: str) -> list[str]:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [line for line in out.split() if line]

    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": names("docker", "ps", "-a", "-q", "--filter", label),
        "networks": names("docker", "network", "ls", "-q", "--filter", label),
        "volumes": names("docker", "volume", "ls", "-q", "--filter", label),
    }


@pytest.fixture(scope="session")
def docker_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerSandbox]:
    problem = _docker_state()
    if problem is not None:
        if os.environ.get("CNOP_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker is required here but not usable: {problem}")
        pytest.skip(f"Docker not usable: {problem}")
    home: Path = tmp_path_factory.mktemp("docker-lab")
    project = f"cnoptest{os.getpid()}"
    config = LabConfig(home=home, port_offset=sandbox_port_offset(3000))
    # Images built by `lab images --offline` in the repository's default sandbox, if any.
    runtime = DockerRuntime(
        config, project=project, images_env=images.images_env_path(REPO_ROOT / ".lab")
    )
    started = time.perf_counter()
    try:
        endpoints = runtime.up(timeout=180)
    except RuntimeError_ as exc:
        pytest.fail(f"DockerRuntime.up failed: {exc}")
    elapsed = time.perf_counter() - started
    print(f"\nDockerRuntime.up: ready in {elapsed:.1f} s ({endpoints.gateway})")
    box = DockerSandbox(runtime, endpoints, project, elapsed)
    try:
        yield box
    finally:
        if not box.down_done:
            runtime.down()
