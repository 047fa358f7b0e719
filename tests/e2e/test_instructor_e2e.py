"""An instructor's loop on a real platform: assignment, a student's tagged run, submit, grade.

The grade must reproduce the live run's verdicts from the bundle's evidence alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Sandbox

pytestmark = pytest.mark.e2e


def test_a_tagged_run_submits_and_grades_to_its_live_verdicts(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    course = tmp_path / "course"
    made = sandbox.lab(
        "assignment", "new", "e2e-course", "--scenario", "order-race", "--out", str(course)
    )
    assert made.returncode == 0, made.stderr
    assignment = course / "e2e-course.assignment.json"
    key = course / "e2e-course.key.json"

    anonymous = sandbox.lab("run", "order-race", "--assignment", str(assignment))
    assert anonymous.returncode == 2
    assert anonymous.stderr.strip().count("\n") == 0 and "student" in anonymous.stderr

    run_dir = tmp_path / "run"
    ran = sandbox.lab(
        "run",
        "order-race",
        "--assignment",
        str(assignment),
        "--student",
        "s001",
        "--seed",
        "7",
        "--out",
        str(run_dir),
        timeout=180,
    )
    assert ran.returncode in (0, 1), ran.stderr
    live = json.loads((run_dir / "result.json").read_text())
    provenance = live["provenance"]
    assert provenance["student"] == "s001"
    assert provenance["assignment"]["name"] == "e2e-course"
    assert len(provenance["scenario_sha256"]) == 64 and provenance["host"]
    assert live["seal"]["alg"] == "HMAC-SHA256"
    assert all(check["raw"] for check in live["checks"])

    bundle = tmp_path / "s001.zip"
    submitted = sandbox.lab(
        "submit", str(run_dir), "--assignment", str(assignment), "--out", str(bundle)
    )
    assert submitted.returncode == 0, submitted.stderr

    out = tmp_path / "gradebook"
    graded = sandbox.lab(
        "grade", str(bundle), "--assignment", str(assignment), "--key", str(key), "--out", str(out)
    )
    assert graded.returncode == 0, graded.stderr
    assert "graded 1 of 1" in graded.stdout
    results = json.loads((out / "results" / "s001" / "results.json").read_text())
    assert results["score"] == live["score"]
    by_check = {t["tags"][1]: t["status"] == "passed" for t in results["tests"]}
    assert by_check == {c["id"]: c["passed"] for c in live["checks"]}
    rows = list(csv.DictReader((out / "gradebook-detail.csv").open()))
    assert rows[0]["status"] == "graded", rows[0]
