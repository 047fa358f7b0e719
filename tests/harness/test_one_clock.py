"""One clock: progress lines, phases, lab timelines and charts count from the drill's start.

Issue 12 found the terminal counting from the run's start (setup included), so a step the lab
puts at 1.8 s printed as `[4.1s]`; and phase names (`open`) that did not say what they measure.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from scenarios.actions import ActionRunner
from scenarios.engine import _Run, progress_stamp, run_method
from scenarios.schema import Scenario, ScenarioError, available, load_scenario
from scenarios.traffic import Recorder

SHIPPED = available()


def test_progress_before_the_drill_says_setup_and_then_counts_from_its_start() -> None:
    assert progress_stamp(0.0) == "[ setup]"
    assert progress_stamp(100.0, now=101.84) == "[   1.8s]"


def test_a_step_at_1_8_s_prints_at_1_8_s_however_long_setup_took() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "clock",
            "title": "Clock",
            "description": "Steps at known times.",
            "method": [
                {"type": "action", "action": "sleep", "seconds": 0, "at": 0.3, "begin": "a"},
                {"type": "action", "action": "sleep", "seconds": 0, "at": 1.8, "end": "a"},
            ],
            "checks": [
                {"id": "n-a", "title": "x", "kind": "logs", "service": "order", "match": {}}
            ],
        }
    )
    lines: list[str] = []
    run = _Run(
        scenario=scenario,
        runtime=None,  # type: ignore[arg-type]  # sleeps never touch it
        seed=1,
        progress=lines.append,
        runner=ActionRunner(runtime=None),  # type: ignore[arg-type]
        recorder=Recorder(),
    )
    run.say("setup: something slow")  # before the method: no time yet
    asyncio.run(run_method(run, tctx=None))  # type: ignore[arg-type]
    assert lines[0] == "[ setup] setup: something slow"
    stamped = [
        (float(m.group(1)), m.group(2))
        for m in (re.match(r"\[\s*([\d.]+)s\] (.*)", line) for line in lines[1:])
        if m
    ]
    assert len(stamped) == len(lines) - 1, lines
    steps = [t for t, text in stamped if text.startswith("> sleep")]
    assert steps == [pytest.approx(0.3, abs=0.15), pytest.approx(1.8, abs=0.15)]
    phases = {text.strip(): t for t, text in stamped if "phase" in text}
    assert phases == {
        "phase a begins": pytest.approx(0.3, abs=0.15),
        "phase a ends": pytest.approx(1.8, abs=0.15),
    }


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_phase_of_a_shipped_drill_says_what_it_is(name: str) -> None:
    scenario = load_scenario(SHIPPED[name])
    for phase in scenario.phase_names[1:]:
        assert scenario.phases.get(phase, "").strip(), (
            f"{name}: phase {phase} has no `phases:` text"
        )


def test_no_phase_is_called_open_any_more() -> None:
    """`open` read as the breaker's open time; the window the fast-fail checks grade is not."""
    for name, path in SHIPPED.items():
        assert "open" not in load_scenario(path).phase_names, name
    for checks in ("upstream-outage", "slow-upstream"):
        scenario = load_scenario(SHIPPED[checks])
        graded = [c.id for c in scenario.checks if getattr(c, "window", "") == "fast-fail"]
        assert graded, f"{checks}: the fast-fail checks grade the fast-fail phase"


def _tiny(**extra: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "title": "Tiny",
        "description": "A tiny drill.",
        "method": [{"type": "action", "action": "sleep", "seconds": 0, "begin": "fault"}],
        "checks": [{"id": "n-a", "title": "x", "kind": "logs", "service": "order", "match": {}}],
        **extra,
    }


def test_phase_notes_and_shaded_phases_must_name_real_phases(tmp_path: Path) -> None:
    Scenario.model_validate(_tiny(phases={"fault": "inventory is down"}))
    with pytest.raises(ValueError, match="phases: 'fualt'"):
        Scenario.model_validate(_tiny(phases={"fualt": "typo"}))
    with pytest.raises(ValueError, match="shades unknown phase"):
        Scenario.model_validate(_tiny(charts=[{"title": "c", "query": "up", "shaded": ["x"]}]))
    assert ScenarioError  # the loader wraps both in one line (tested in test_schema)


def test_a_chart_shades_every_phase_unless_told_otherwise() -> None:
    chart = Scenario.model_validate(_tiny(charts=[{"title": "c", "query": "up"}])).charts[0]
    assert chart.shaded is None  # the engine then shades every phase but `drill`


def test_labs_name_only_phases_their_drills_have() -> None:
    """A lab that names phase `x` of its drill (`phase \\`x\\``) names a real one."""
    labs = Path(__file__).resolve().parents[2] / "labs"
    drill_of = re.compile(r"Drill: `([a-z-]+)`")
    named = re.compile(r"phases? `([a-z-]+)`")
    for lab in sorted(labs.glob("[0-9]*.md")):
        text = lab.read_text(encoding="utf-8")
        if text.split("\n\n", 2)[1].startswith("Command: `lab "):
            continue  # a lab around a command (lab bench), not a drill: no phases
        drill = drill_of.search(text)
        assert drill, lab.name
        phases = set(load_scenario(SHIPPED[drill.group(1)]).phase_names)
        for phase in named.findall(text):
            assert phase in phases, f"{lab.name} names phase {phase!r}, not one of {phases}"
