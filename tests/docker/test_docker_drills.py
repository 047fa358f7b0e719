"""The drills on the Docker runtime: the same scenario engine, containers instead of processes.

Runs before test_docker_runtime.py (file order), on the session's Docker sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.engine import run_scenario
from scenarios.schema import find, load_scenario
from tests.docker.conftest import DockerSandbox

pytestmark = pytest.mark.docker

DRILLS = (
    "upstream-outage",
    "login-flood",
    "order-race",
    "lock-holder-pause",
)


@pytest.fixture(scope="module", autouse=True)
def _clean_state_after(docker_sandbox: DockerSandbox) -> Iterator[None]:
    yield
    # Host clients without an edge address share one (Docker's port proxy): leave no limits.
    docker_sandbox.runtime.clear_state_keys()


@pytest.mark.parametrize("name", DRILLS)
def test_drill_passes_on_docker(docker_sandbox: DockerSandbox, name: str, tmp_path: Path) -> None:
    scenario = load_scenario(find(name))
    result = run_scenario(scenario, docker_sandbox.runtime, seed=20261125, out_dir=tmp_path)
    assert result.runtime == "docker"
    # Every client the drill names was played by an address of its own on the edge network.
    seen = list(result.client_addresses.values())
    assert len(set(seen)) == len(seen) and all(a.startswith("172.") for a in seen), seen
    failed = [
        {"id": c.id, "error": c.error, "evidence": c.evidence}
        for c in result.checks
        if c.required and not c.passed
    ]
    summary = json.dumps(
        {"failed": failed, "errors": result.errors, "steady": result.steady_state}, default=str
    )[:4000]
    print(f"{name}: score {result.score}/{result.max_score} in {result.duration_s:.1f} s")
    assert result.passed, summary
