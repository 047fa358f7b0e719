"""Mutation tests of the grader: each drill must FAIL against the mutants it is meant to catch.

`lab selftest` proves a drill notices a protection switched off; a mutant keeps the protection
on but wrong (a threshold off by a few, a shorter block, a lock that outlives its TTL), the bug
real systems have. For each mutant of tests/mutants/catalogue.yaml: a copy of platform/ with the
mutant applied, the services it changes restarted from that copy (PYTHONPATH first), the drill
run through `lab run`; the next mutant first puts whatever ran mutated code back on the real
code (and always restarts the gateway, whose breakers live in its process). The mutant is caught
when the run fails and at least one of the checks it names (the ones that measure the broken
number) failed. One sandbox serves the whole catalogue: only the mutated services restart.

Run: `scripts/test.sh -m mutants tests/mutants` (CI does, as its own step). The score, with the
checks that caught each mutant, is printed at the end and written to
``$CNOP_MUTANTS_REPORT`` (default: mutation-score.json in pytest's base temp folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scenarios.schema import SCENARIO_DIR, ActionSpec, load_scenario
from tests.mutants.catalogue import SERVICES, Mutant, load_catalogue, mutated_platform
from tests.sandbox import Sandbox, lab_sandbox

pytestmark = pytest.mark.mutants

PORT_OFFSET = 14000
# Drill after drill, in catalogue order grouped by drill (each drill's scenario parsed once).
MUTANTS = sorted(load_catalogue(), key=lambda m: m.drill)
# Stop and start each service; a start that outlasts the runtime's own readiness wait (a busy
# machine) is waited out here, up to READY_WAIT_S, before the next service goes.
READY_WAIT_S = 180
RESTART = f"""
import sys, time
from scenarios.config import LabConfig
from scenarios.runtime import current_runtime
from scenarios.runtime.base import RuntimeError_

runtime = current_runtime(LabConfig())
for name in sys.argv[1:]:
    runtime.stop(name)
    try:
        runtime.start(name)
    except RuntimeError_:
        deadline = time.monotonic() + {READY_WAIT_S}
        while not any(c.name == name and c.ready for c in runtime.status()):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
"""


@pytest.fixture(scope="session")
def mutants_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("mutants-home")
    with lab_sandbox(home, PORT_OFFSET, up_timeout=180) as box:
        yield box


@pytest.fixture(scope="session")
def score(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Each mutant's verdict, printed and written out when the session ends."""
    outcomes: dict[str, dict[str, Any]] = {}
    yield outcomes
    caught = sum(1 for o in outcomes.values() if o["caught"])
    report = {"caught": caught, "total": len(outcomes), "mutants": outcomes}
    target = Path(
        os.environ.get("CNOP_MUTANTS_REPORT")
        or tmp_path_factory.getbasetemp() / "mutation-score.json"
    )
    target.write_text(json.dumps(report, indent=2))
    lines = [f"\nmutation score: {caught}/{len(outcomes)} ({target})"]
    for mutant_id, o in outcomes.items():
        verdict = "caught by " + ", ".join(o["caught_by"]) if o["caught"] else "NOT CAUGHT"
        if o["gap"] and not o["caught"]:
            verdict += f" (known gap: {o['gap']})"
        lines.append(f"  {mutant_id:34} {o['drill']:18} {verdict}")
    print("\n".join(lines))


def _drill_restarts(drill: str) -> set[str]:
    """Services the drill (re)starts itself: they come back with whatever code `lab run` sees."""
    scenario = load_scenario(str(SCENARIO_DIR / f"{drill}.yaml"))
    actions = [
        *scenario.setup_actions,
        *scenario.rollbacks,
        *(s for s in scenario.method if isinstance(s, ActionSpec)),
    ]
    return {
        a.target
        for a in actions
        if a.action in ("reconfigure", "start", "restart") and a.target in SERVICES
    }


def _restart(box: Sandbox, services: set[str], pythonpath: Path | None) -> None:
    env = {k: v for k, v in box.env.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", RESTART, *sorted(services)],
        env=env,
        capture_output=True,
        text=True,
        timeout=READY_WAIT_S * 6 + 60,
        check=False,
    )
    # The runtime's error is the traceback's end; the service log lines it quotes come first.
    why = [line for line in done.stderr.splitlines() if not line.lstrip().startswith("{")]
    assert done.returncode == 0, f"restarting {sorted(services)} failed:\n" + "\n".join(why[-8:])


def _run_drill(box: Sandbox, drill: str, out: Path, pythonpath: Path) -> dict[str, Any]:
    env = {**box.env, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lab"), "run", drill, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    result = out / "result.json"
    assert result.exists(), f"lab run {drill} wrote no result:\n{done.stdout}\n{done.stderr}"
    return json.loads(result.read_text())


@pytest.fixture(scope="session")
def dirty() -> set[str]:
    """Services that may still run a mutant's code: the previous mutant's, and those its drill
    restarted under it. Each test puts them back on the real code before its own mutant goes
    in, so a service restarts once per mutant rather than twice."""
    return set()


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_drill_catches_the_mutant(
    mutant: Mutant,
    mutants_sandbox: Sandbox,
    score: dict[str, dict[str, Any]],
    dirty: set[str],
    tmp_path: Path,
) -> None:
    platform = mutated_platform(mutant, tmp_path / "copy")
    mutated = set(mutant.services)
    # Always a fresh gateway: its breakers live in its process, and a mutant that made an
    # upstream fail must not leave this drill facing an open breaker.
    clean = (dirty | {"gateway"}) - mutated
    dirty.clear()
    dirty.update(mutated | _drill_restarts(mutant.drill))
    if clean:
        _restart(mutants_sandbox, clean, None)
    _restart(mutants_sandbox, mutated, platform)
    result = _run_drill(mutants_sandbox, mutant.drill, tmp_path / "run", platform)
    if not result["checks"]:
        # The method never ran (setup met a platform too busy to answer): that says nothing
        # about the mutant, so the drill gets one more go.
        result = _run_drill(mutants_sandbox, mutant.drill, tmp_path / "rerun", platform)
    failed = [c["id"] for c in result["checks"] if not c["passed"]]
    caught_by = [c for c in mutant.catches if c in failed]
    caught = not result["passed"] and bool(caught_by)
    score[mutant.id] = {
        "drill": mutant.drill,
        "why": mutant.why,
        "caught": caught,
        "caught_by": caught_by,
        "failed_checks": failed,
        "errors": result.get("errors", []),
        "drill_seconds": result.get("duration_s"),
        "gap": mutant.gap,
    }
    if mutant.gap and not caught:
        pytest.xfail(f"{mutant.id} survives {mutant.drill}: {mutant.gap}")
    assert caught, (
        f"{mutant.drill} did not catch {mutant.id} ({mutant.why}): none of "
        f"{mutant.catches} failed; failed checks: {failed or 'none'}; "
        f"errors: {result.get('errors') or 'none'}"
    )
