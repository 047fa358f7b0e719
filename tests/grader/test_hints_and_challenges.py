"""Grading what a student did beyond the checks: hints they opened (each costs the assignment's
hint cost) and, for a challenge, whether the run was made under the challenge at all."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from grader.assignments import AssignmentScenario, new_assignment, signing_key, write_assignment
from grader.bundles import make_bundle, seal_result
from grader.model import RunResult
from grader.report import render_run
from tests.grader.test_gradebook import SHA, edit_result, grade_all, make_run

HINTS = [
    {"lab": "01", "scenario": "toy", "hint": 1, "title": "Hint 1", "revealed_at": "x"},
    {"lab": "01", "scenario": "toy", "hint": 2, "title": "Hint 2", "revealed_at": "y"},
]


def make_course(tmp_path: Path, **options: Any) -> dict[str, Any]:
    assignment, key = new_assignment(
        "week2",
        [AssignmentScenario(name="toy", sha256=SHA)],
        due=datetime.now(UTC) + timedelta(days=1),
        **options,
    )
    write_assignment(assignment, key, tmp_path / "course")
    return {"assignment": assignment, "key": key, "signer": signing_key(assignment, key)}


def submit(
    course: dict[str, Any], folder: Path, student: str, change: Callable[[dict], None]
) -> Path:
    """A run as `lab run --assignment` makes it, with what the sandbox recorded (``change``),
    sealed and bundled."""
    make_run(folder, course, student, healthy=True)
    edit_result(folder, change)
    data = RunResult.model_validate_json((folder / "result.json").read_text())
    render_run(seal_result(data, course["signer"], course["assignment"].key_id), folder)
    target = folder.parent / f"{student}.zip"
    return make_bundle([folder], course["assignment"], target, course["signer"])[0]


def test_each_hint_opened_before_the_graded_run_costs_the_hint_cost(tmp_path: Path) -> None:
    course = make_course(tmp_path, hint_cost=1)
    helped = submit(course, tmp_path / "a", "ada", lambda d: d["provenance"].update(hints=HINTS))
    alone = submit(course, tmp_path / "b", "bo", lambda d: None)
    grades = grade_all(course, [helped, alone], tmp_path / "gb")
    full = grades["bo"].score
    assert full == 4 and not grades["bo"].flags
    assert grades["ada"].hints == {"toy": 2} and grades["ada"].score == full - 2
    assert any("2 hint(s) revealed before the run, -2 points" in f for f in grades["ada"].flags)
    csv_text = (tmp_path / "gb" / "gradebook.csv").read_text()
    assert "ada,,ada,ada,,2" in csv_text
    detail = {
        r["student"]: r for r in csv.DictReader((tmp_path / "gb" / "gradebook-detail.csv").open())
    }
    assert (detail["ada"]["hints"], detail["ada"]["hint_penalty"]) == ("2", "2")
    assert (detail["bo"]["hints"], detail["bo"]["hint_penalty"]) == ("0", "0")
    html = (tmp_path / "gb" / "gradebook.html").read_text()
    assert "Hints</th>" in html and "(\u22122)" in html  # the instructor sees who needed help


def test_hints_never_take_a_score_below_zero(tmp_path: Path) -> None:
    course = make_course(tmp_path, hint_cost=50)
    helped = submit(course, tmp_path / "a", "ada", lambda d: d["provenance"].update(hints=HINTS))
    assert grade_all(course, [helped], tmp_path / "gb")["ada"].score == 0


def test_a_hint_erased_from_a_sealed_run_makes_it_unverifiable(tmp_path: Path) -> None:
    course = make_course(tmp_path, hint_cost=1)
    folder = tmp_path / "a"
    make_run(folder, course, "ada", healthy=True)
    edit_result(folder, lambda d: d["provenance"].update(hints=HINTS))
    data = RunResult.model_validate_json((folder / "result.json").read_text())
    render_run(seal_result(data, course["signer"], course["assignment"].key_id), folder)
    edit_result(folder, lambda d: d["provenance"].update(hints=[]))  # after the run: too late
    bundle = make_bundle([folder], course["assignment"], tmp_path / "a.zip", course["signer"])[0]
    grade = grade_all(course, [bundle], tmp_path / "gb")["ada"]
    assert not grade.verified and "seal is broken" in "; ".join(grade.problems)


def test_a_challenge_grades_the_fix_and_flags_a_run_made_without_the_challenge(
    tmp_path: Path,
) -> None:
    course = make_course(
        tmp_path, challenge={"settings": {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}}
    )
    token = course["assignment"].challenge
    fixed = {"gateway": {"CNOP_BREAKER_ENABLED": "true"}}

    def under_challenge(data: dict) -> None:
        data["provenance"].update(
            challenge={"assignment": course["assignment"].ref, "token": token}, settings=fixed
        )

    honest = submit(course, tmp_path / "a", "ada", under_challenge)
    dodged = submit(course, tmp_path / "b", "bo", lambda d: None)  # plain `lab up`
    grades = grade_all(course, [honest, dodged], tmp_path / "gb")
    ada, bo = grades["ada"], grades["bo"]
    assert ada.verified and bo.verified
    assert not any("did not run under the challenge" in f for f in ada.flags)
    assert any("the student's fix" in f and "CNOP_BREAKER_ENABLED" in f for f in ada.flags)
    # A fix is not "other settings than assigned" in a challenge.
    assert not any("not the assigned ones" in f for f in ada.flags)
    assert any("did not run under the challenge" in f for f in bo.flags)
