"""The drills on the Docker runtime: the same scenario engine, containers instead of processes.

Runs before test_docker_runtime.py (file order), on the session's Docker sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.engine import run_selftest
from scenarios.schema import available, find, load_scenario
from tests.docker.conftest import DockerSandbox

pytestmark = pytest.mark.docker

# Every drill, also those added later: nothing keeps a drill passing on Docker but this.
# A drill that does not pass on Docker yet stays in the run, marked with why (not strict: a
# pass is reported too).
KNOWN_ON_DOCKER = {
    "slow-upstream": (
        "fails-fast-while-open bounds the client-side p99 of the open breaker's 503s at 100 ms; "
        "through Docker's edge network it measured 180 ms once on a 2-core CI machine (passed "
        "on 2026-11-27)"
    ),
    "upstream-outage": (
        "the same kind of bound: fails-fast wants the client-side p99 of the open breaker's 503s "
        "under 100 ms; through Docker's edge network it measured 103.7 ms in a fresh-clone run "
        "and 141 and 300 ms under load (2026-11-28), and passed in another suite run"
    ),
}
DRILLS = tuple(
    pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_ON_DOCKER[name], strict=False))
    if name in KNOWN_ON_DOCKER
    else name
    for name in available()
)


@pytest.fixture(scope="module", autouse=True)
def _clean_state_after(docker_sandbox: DockerSandbox) -> Iterator[None]:
    yield
    # Host clients without an edge address share one (Docker's port proxy): leave no limits.
    docker_sandbox.runtime.clear_state_keys()


@pytest.mark.parametrize("name", DRILLS)
def test_every_drill_passes_its_selftest_on_docker(
    docker_sandbox: DockerSandbox, name: str, tmp_path: Path
) -> None:
    """`lab selftest` of each drill on Docker: hardened, every required check passes; with its
    protection switched off (its `weaken:` settings, the containers recreated with them), every
    check that guards the protection fails. The whole selftest took 10.5 min here (against
    4.3 min for the hardened drills alone), which CI's 90 minutes hold."""
    scenario = load_scenario(find(name))
    outcome = run_selftest(scenario, docker_sandbox.runtime, seed=20261125, out_dir=tmp_path)
    result = outcome.hardened
    assert result is not None and result.runtime == "docker" and result.mode == "hardened"
    # Every client the drill names was played by an address of its own on the edge network.
    seen = list(result.client_addresses.values())
    assert len(set(seen)) == len(seen) and all(a.startswith("172.") for a in seen), seen
    failed = [
        {"id": c.id, "error": c.error, "evidence": c.evidence}
        for c in result.checks
        if c.required and not c.passed
    ]
    # Components not running after a failed run (exit code, OOM kill, last log lines): what the
    # known gaps above need to be understood.
    down = (
        [c for c in docker_sandbox.runtime.status() if c.state != "running"]
        if not outcome.ok
        else []
    )
    summary = json.dumps(
        {
            "problems": outcome.problems,
            "failed": failed,
            "errors": result.errors,
            "steady": result.steady_state,
            "down": [c.__dict__ for c in down],
        },
        default=str,
    )[:6000]
    weakened = outcome.weakened
    print(
        f"{name}: hardened {result.score}/{result.max_score} in {result.duration_s:.1f} s, "
        f"weakened {weakened.score if weakened else '-'} on Docker"
    )
    assert outcome.ok, summary
