"""The labs' "Break it" tables come from selftest results (scenarios.labdocs): written between
their markers, and any disagreement between the text and a measured selftest is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.model import CheckResult, RunResult
from scenarios import labdocs
from scenarios.schema import available, load_scenario
from tests.grader.samples import sample_result

LABS = Path(__file__).resolve().parents[2] / "labs"
NAME = "upstream-outage"


def _result(mode: str, failing: set[str]) -> RunResult:
    scenario = load_scenario(available()[NAME])
    checks = [
        CheckResult(
            id=c.id,
            title=c.title,
            kind=c.kind,
            passed=c.id not in failing,
            points=0 if c.id in failing else c.points,
            max_points=c.points,
            required=c.required,
            guards=c.guards,
        )
        for c in scenario.checks
    ]
    update = {"scenario": NAME, "mode": mode, "checks": checks, "errors": []}
    return sample_result().model_copy(update=update)


def _selftest(folder: Path, weakened_failing: set[str]) -> Path:
    for mode, failing in (("hardened", set()), ("weakened", weakened_failing)):
        run = folder / f"{NAME}-{mode}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(_result(mode, failing).model_dump_json())
    return folder


@pytest.fixture
def labs(tmp_path: Path) -> Path:
    copy = tmp_path / "labs"
    shutil.copytree(LABS, copy)
    return copy


def _guarded() -> set[str]:
    return set(load_scenario(available()[NAME]).guarded_checks)


def test_write_puts_the_measured_failures_in_the_lab_and_the_readme(
    labs: Path, tmp_path: Path
) -> None:
    untagged = "time-to-detect"
    folder = _selftest(tmp_path / "st", _guarded() | {untagged})
    changed = labdocs.write([folder], labs)
    lab = (labs / "01-upstream-outage.md").read_text()
    assert set(changed) == {labs / "01-upstream-outage.md", labs / "README.md"}
    assert f"| `{untagged}` |  | 1 | **FAIL** |" in lab
    assert "| `other-routes-unaffected` |  | 2 | pass |" in lab
    readme = (labs / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| {NAME} |"))
    assert "`breaker-opens`" in row.split("|")[4]
    assert f"`{untagged}`" in row.split("|")[5]
    assert "| login-race |" in readme  # drills without results keep their row
    assert labdocs.write([folder], labs) == []  # a second write changes nothing
    assert labdocs.check([folder], labs) == []


def test_check_reports_a_lab_that_disagrees_with_a_selftest(labs: Path, tmp_path: Path) -> None:
    labdocs.write([_selftest(tmp_path / "a", _guarded())], labs)
    other = _selftest(tmp_path / "b", _guarded() | {"fails-fast"})
    problems = labdocs.check([other], labs)
    assert problems == [
        f"{NAME}: fails-fast weakened: the lab says pass, the selftest measured FAIL"
    ]


def test_an_outcome_that_differs_between_selftests_is_written_as_varies(
    labs: Path, tmp_path: Path
) -> None:
    first = _selftest(tmp_path / "a", _guarded())
    second = _selftest(tmp_path / "b", _guarded() | {"fails-fast"})
    labdocs.write([first, second], labs)
    lab = (labs / "01-upstream-outage.md").read_text()
    assert "| `fails-fast` |  | 2 | varies |" in lab
    assert labdocs.check([first], labs) == [] and labdocs.check([second], labs) == []


def test_a_lab_without_markers_is_one_clear_error(labs: Path, tmp_path: Path) -> None:
    lab = labs / "01-upstream-outage.md"
    lab.write_text(lab.read_text().replace("<!-- BEGIN selftest", "<!-- gone"))
    with pytest.raises(labdocs.LabDocsError, match="no `<!-- BEGIN selftest"):
        labdocs.write([_selftest(tmp_path / "st", _guarded())], labs)


def test_a_weakened_run_that_broke_off_is_no_measurement(labs: Path, tmp_path: Path) -> None:
    folder = _selftest(tmp_path / "st", _guarded())
    weakened = folder / f"{NAME}-weakened" / "result.json"
    broken = RunResult.model_validate_json(weakened.read_text())
    broken = broken.model_copy(update={"errors": ["not ready in time: inventory"]})
    weakened.write_text(broken.model_dump_json())
    with pytest.raises(labdocs.LabDocsError, match="no selftest results"):
        labdocs.write([folder], labs)
