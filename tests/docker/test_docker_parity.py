"""One seeded drill on each runtime gives the same verdict on every check (timings may differ).

Runs after the drills (file order), on the session's Docker sandbox and a local sandbox of its
own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.config import LabConfig
from scenarios.engine import run_scenario
from scenarios.runtime.local import LocalRuntime
from scenarios.schema import find, load_scenario
from tests.conftest import sandbox_port_offset
from tests.docker.conftest import DockerSandbox

pytestmark = pytest.mark.docker

PARITY_DRILL = "token-attacks"
SEED = 20261127


@pytest.fixture(scope="module")
def local_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    config = LabConfig(
        home=tmp_path_factory.mktemp("parity-local"), port_offset=sandbox_port_offset(7000)
    )
    runtime = LocalRuntime(config)
    runtime.up(timeout=120)
    try:
        yield runtime
    finally:
        runtime.down()


def test_same_drill_same_verdicts_on_both_runtimes(
    docker_sandbox: DockerSandbox, local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    scenario = load_scenario(find(PARITY_DRILL))
    verdicts = {}
    for runtime in (local_runtime, docker_sandbox.runtime):
        result = run_scenario(scenario, runtime, seed=SEED, out_dir=tmp_path / runtime.name)
        verdicts[runtime.name] = {c.id: c.passed for c in result.checks}
        print(f"{runtime.name}: {result.score}/{result.max_score} in {result.duration_s:.1f} s")
    assert verdicts["local"] == verdicts["docker"]
    assert all(verdicts["local"].values()), verdicts["local"]
