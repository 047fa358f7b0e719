"""Every drill against a real platform: hardened, all required checks pass; weakened the way
its ``weaken`` says, every check that guards the protection fails (what `lab selftest` does),
and the lab's generated "Break it" table agrees with what this run measured.

One sandbox for the module, started through the runtime API in a temporary CNOP_LAB_HOME on
shifted ports, so neither a learner's sandbox nor the e2e session sandbox is touched (drills
kill, pause and reconfigure services).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.config import LabConfig
from scenarios.engine import EngineError, run_scenario, run_selftest
from scenarios.labdocs import disagreements, documented, lab_file, outcomes_from_results
from scenarios.runtime.local import LocalRuntime
from scenarios.schema import available, load_scenario
from tests.conftest import sandbox_port_offset

pytestmark = pytest.mark.e2e

# The whole `lab drill` on a 2-core machine: 240 s, plus the 16 s breaker-rules grew by when it
# learned to catch a breaker that waits for too many calls or admits too many trials (issue #10).
DRILL_BUDGET_SECONDS = 256.0
SCENARIOS = sorted(available())
durations: dict[str, float] = {}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    home = tmp_path_factory.mktemp("drill-lab")
    config = LabConfig(home=home, port_offset=sandbox_port_offset(18000))
    rt = LocalRuntime(config)
    rt.up(timeout=120)
    try:
        yield rt
    finally:
        rt.down()
        if durations:
            total = sum(durations.values())
            lines = "\n".join(f"  {name:20s} {secs:6.1f} s" for name, secs in durations.items())
            print(f"\nhardened drill durations:\n{lines}\n  {'total':20s} {total:6.1f} s")


def test_a_stopped_platform_is_one_clear_error(tmp_path: Path) -> None:
    config = LabConfig(home=tmp_path / "nothing", port_offset=sandbox_port_offset(10000))
    scenario = load_scenario(available()["token-attacks"])
    with pytest.raises(EngineError, match=r"run `lab up` first"):
        run_scenario(scenario, LocalRuntime(config), seed=1)


@pytest.mark.parametrize("name", SCENARIOS)
def test_drill_hardened_passes_and_weakened_fails(
    name: str, runtime: LocalRuntime, tmp_path: Path
) -> None:
    scenario = load_scenario(available()[name])
    started = time.monotonic()
    outcome = run_selftest(scenario, runtime, seed=1234, out_dir=tmp_path, progress=print)
    assert outcome.hardened is not None
    durations[name] = outcome.hardened.duration_s
    elapsed = time.monotonic() - started
    print(f"{name}: hardened {durations[name]:.1f} s, selftest {elapsed:.1f} s")

    hardened = outcome.hardened
    failed = {
        c.id: (c.error or c.evidence.get("comparison")) for c in hardened.checks if not c.passed
    }
    assert hardened.passed, f"hardened {name}: failed {failed}, errors {hardened.errors}"
    assert (tmp_path / f"{name}-hardened" / "report.html").exists()
    assert hardened.steady_state["before"]["held"] and hardened.steady_state["after"]["held"]

    weakened = outcome.weakened
    assert weakened is not None and weakened.mode == "weakened"
    assert (tmp_path / f"{name}-weakened" / "result.json").exists()
    survivors = [c.id for c in weakened.checks if c.guards and c.passed]
    assert not survivors, f"weakened {name}: guarded checks still passed: {survivors}"
    assert outcome.ok, outcome.problems

    # The lab's "Break it" table (scenarios.labdocs) says which checks fail when weakened: this
    # selftest is the measurement it must agree with.
    measured = outcomes_from_results(name, [(hardened, weakened)])
    text = lab_file(name).read_text(encoding="utf-8")
    if not documented(text):
        pytest.xfail(
            f"{name}: the lab's selftest table was never measured; write it from this run: "
            f"`python -m scenarios.labdocs --write {tmp_path}`"
        )
    drift = disagreements(text, measured)
    assert not drift, (
        "the lab's selftest table disagrees with this run; regenerate it with "
        f"`python -m scenarios.labdocs --write {tmp_path}` (after checking the runs):\n"
        + "\n".join(drift)
    )


def test_the_whole_drill_fits_the_budget(runtime: LocalRuntime) -> None:
    """The drills that ran in this session fit the budget of the whole `lab drill`: all eight
    in the full suite (CI); under a -k selection, the sum of those selected."""
    assert durations, "no drill ran before this test: select the drill tests too"
    total = sum(durations.values())
    assert total < DRILL_BUDGET_SECONDS, f"lab drill would take {total:.0f} s: {durations}"
