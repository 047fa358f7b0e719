"""Assignments, sealed runs, signed bundles and the gradebook, without a live platform.

Run folders are made the way ``lab run --assignment`` makes them: the checks are evaluated live
on recorded traffic and a stand-in log source, the result is sealed and rendered. Three students
then hand in: one honestly, one after editing result.json's verdicts, one after editing a
check's raw evidence.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from grader.assignments import (
    AssignmentError,
    AssignmentScenario,
    load_assignment,
    load_key,
    new_assignment,
    signing_key,
    write_assignment,
)
from grader.bundles import make_bundle, seal_result, verify_bundle
from grader.evaluate import evaluate_all, reevaluate
from grader.gradebook import CSV_COLUMNS, grade_bundle, write_gradebook
from grader.model import (
    LogsCheck,
    Observation,
    Phase,
    Provenance,
    RunContext,
    RunResult,
    TrafficCheck,
)
from grader.report import render_run
from tests.grader.samples import sample_result
from tests.grader.test_logs import FakeLogs

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SHA = "a" * 64
SPECS = {
    "toy": [
        TrafficCheck(
            id="available",
            title="Clients keep getting answers",
            points=3,
            generator="web",
            metric="availability",
            op=">=",
            value=0.9,
            hint="Does the breaker answer fast while the upstream fails?",
        ),
        LogsCheck(
            id="limited",
            title="The gateway logs rate limiting",
            points=1,
            service="gateway",
            match={"event": "rate_limited"},
            hint="Log rate_limited for every 429.",
        ),
    ]
}


@pytest.fixture
def course(tmp_path: Path) -> dict[str, Any]:
    assignment, key = new_assignment(
        "week1",
        [AssignmentScenario(name="toy", sha256=SHA)],
        due=datetime.now(UTC) + timedelta(days=1),
    )
    public, private = write_assignment(assignment, key, tmp_path / "course")
    return {
        "assignment": assignment,
        "key": key,
        "signer": signing_key(assignment, key),
        "public": public,
        "private": private,
    }


def make_run(
    folder: Path, course: dict[str, Any], student: str, *, healthy: bool, finished: datetime = T0
) -> Path:
    """A sealed run folder as `lab run toy --assignment ... --student STUDENT` leaves it."""
    start, end = finished - timedelta(seconds=30), finished
    traffic = [
        Observation(
            generator="web",
            t=start.timestamp() + i / 10,
            status=200 if healthy or i % 2 else 503,
            latency_s=0.02,
        )
        for i in range(200)
    ]
    stamp = (start + timedelta(seconds=5)).isoformat()
    logs = FakeLogs({"gateway": [{"timestamp": stamp, "event": "rate_limited"}]})
    ctx = RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url="http://127.0.0.1:9",
        phases={"drill": Phase(name="drill", start=start, end=end)},
        traffic={"web": traffic},
        logs=logs,
    )
    checks = evaluate_all(SPECS["toy"], ctx)
    assignment = course["assignment"]
    result = RunResult(
        scenario="toy",
        title="A toy drill",
        seed=7,
        params={},
        runtime="local",
        started_at=start,
        finished_at=end,
        duration_s=30,
        phases=list(ctx.phases.values()),
        checks=checks,
        score=sum(c.points for c in checks),
        max_score=sum(c.max_points for c in checks),
        passed=all(c.passed for c in checks),
        provenance=Provenance(
            student=student, scenario_sha256=SHA, assignment=assignment.ref, host="pc1"
        ),
    )
    sealed = seal_result(result, course["signer"], assignment.key_id)
    render_run(sealed, folder)
    return folder


def edit_result(folder: Path, change: Any) -> None:
    path = folder / "result.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def grade_all(course: dict[str, Any], bundles: list[Path], out: Path) -> dict[str, Any]:
    assignment = course["assignment"]
    grades = [
        grade_bundle(verify_bundle(b, assignment, course["signer"]), assignment, SPECS, {})
        for b in bundles
    ]
    write_gradebook(grades, assignment, SPECS, out)
    return {g.student: g for g in grades}


def test_assignment_round_trip_keeps_the_key_apart_and_private(course: dict[str, Any]) -> None:
    public, private = course["public"], course["private"]
    again, key = load_assignment(public), load_key(private)
    assert again == course["assignment"]
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert key.secret not in public.read_text(), "the students' file never holds the secret"
    assert signing_key(again, key) == course["signer"]
    with pytest.raises(AssignmentError, match="instructor's key"):
        load_assignment(private)
    with pytest.raises(AssignmentError, match="exists"):
        write_assignment(again, key, public.parent)


def test_an_edited_assignment_no_longer_derives_from_the_key(course: dict[str, Any]) -> None:
    later = course["assignment"].model_copy(update={"due": datetime.now(UTC) + timedelta(days=30)})
    with pytest.raises(AssignmentError, match="changed after it was created"):
        signing_key(later, course["key"])
    _, other_key = new_assignment("week2", [AssignmentScenario(name="toy", sha256=SHA)])
    with pytest.raises(AssignmentError, match="another assignment"):
        signing_key(course["assignment"], other_key)


def test_three_students_honest_tampered_verdict_and_edited_evidence(
    course: dict[str, Any], tmp_path: Path
) -> None:
    assignment, signer = course["assignment"], course["signer"]
    alice = make_run(tmp_path / "alice-run", course, "alice", healthy=True)
    bob = make_run(tmp_path / "bob-run", course, "bob", healthy=False)
    carol = make_run(tmp_path / "carol-run", course, "carol", healthy=False)

    def claim_pass(data: dict[str, Any]) -> None:
        for check in data["checks"]:
            check["passed"], check["points"] = True, check["max_points"]
        data["score"], data["passed"] = data["max_score"], True

    def hide_errors(data: dict[str, Any]) -> None:
        columns = data["checks"][0]["raw"]["traffic"]["web"]
        columns["status"] = [200 for _ in columns["status"]]
        claim_pass(data)

    edit_result(bob, claim_pass)
    edit_result(carol, hide_errors)
    bundles = [
        make_bundle([folder], assignment, tmp_path / f"{name}.zip", signer)[0]
        for name, folder in (("alice", alice), ("bob", bob), ("carol", carol))
    ]
    out = tmp_path / "gradebook"
    grades = grade_all(course, bundles, out)

    honest = grades["alice"]
    assert honest.verified and not honest.flags
    assert honest.score == 4

    tampered = grades["bob"]
    assert tampered.verified, tampered.problems
    assert not tampered.checks["toy/available"].result.passed  # re-graded to its true result
    assert tampered.score == 1
    assert tampered.regraded == ["toy/available"]
    assert any("claims other verdicts" in f for f in tampered.flags)

    edited = grades["carol"]
    assert not edited.verified
    assert any("seal is broken" in p for p in edited.problems)

    html = (out / "gradebook.html").read_text()
    assert "unverifiable" in html and "carol" in html
    assert "Does the breaker answer fast" in html  # the most failed check's hint
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    by_student = {r["SIS User ID"]: r for r in rows}
    score = "week1 (points of 4)"
    assert by_student["alice"][score] == "4"
    assert by_student["bob"][score] == "1"
    assert by_student["carol"][score] == "", "an unverifiable bundle is never graded 0 silently"


def test_csv_columns_are_the_ones_canvas_imports(course: dict[str, Any], tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", course, "dana", healthy=True)
    bundle = make_bundle([run], course["assignment"], tmp_path / "d.zip", course["signer"])[0]
    grade_all(course, [bundle], tmp_path / "gb")
    with (tmp_path / "gb" / "gradebook.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header == [*CSV_COLUMNS, "week1 (points of 4)"]
    assert CSV_COLUMNS == ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
    with (tmp_path / "gb" / "gradebook-detail.csv").open() as handle:
        detail = next(csv.reader(handle))
    assert detail[:4] == ["student", "status", "score", "max_score"]
    assert "toy/available" in detail and "toy/limited" in detail


def test_junit_parses_and_results_json_follow_gradescope(
    course: dict[str, Any], tmp_path: Path
) -> None:
    good = make_run(tmp_path / "e", course, "erin", healthy=True)
    bad = make_run(tmp_path / "f", course, "frank", healthy=False)
    bundles = [
        make_bundle([good], course["assignment"], tmp_path / "e.zip", course["signer"])[0],
        make_bundle([bad], course["assignment"], tmp_path / "f.zip", course["signer"])[0],
    ]
    grade_all(course, bundles, tmp_path / "gb")
    root = ET.parse(tmp_path / "gb" / "junit.xml").getroot()  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"erin", "frank"}
    assert suites["erin"].get("failures") == "0"
    assert suites["frank"].find("testcase[@name='available']/failure") is not None

    for student, score in (("erin", 4), ("frank", 1)):
        doc = json.loads((tmp_path / "gb" / "results" / student / "results.json").read_text())
        assert doc["score"] == score and doc["max_score"] == 4
        assert isinstance(doc["output"], str)
        for test in doc["tests"]:
            assert set(test) >= {"name", "score", "max_score", "status", "output"}
            assert test["status"] in ("passed", "failed")
            assert isinstance(test["score"], int | float)
        assert sum(t["score"] for t in doc["tests"]) == score
    frank = json.loads((tmp_path / "gb" / "results" / "frank" / "results.json").read_text())
    failed = [t for t in frank["tests"] if t["status"] == "failed"]
    assert failed and "Hint:" in failed[0]["output"]


def _rewrite(bundle: Path, change: Any) -> None:
    with zipfile.ZipFile(bundle) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    change(members)
    with zipfile.ZipFile(bundle, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda m: m.update({"runs/01-toy/result.json": m["runs/01-toy/result.json"] + b" "}),
            "does not match its sha256",
        ),
        (lambda m: m.update({"notes.txt": b"hi"}), "members not in the manifest"),
        (
            lambda m: m.update({"manifest.json": m["manifest.json"].replace(b"gina", b"hugo")}),
            "signature does not match",
        ),
        (lambda m: m.pop("signature.json"), "missing or not JSON"),
        (lambda m: m.pop("runs/01-toy/result.json"), "listed in the manifest but missing"),
    ],
)
def test_a_bundle_changed_after_signing_does_not_verify(
    course: dict[str, Any], tmp_path: Path, change: Any, problem: str
) -> None:
    run = make_run(tmp_path / "run", course, "gina", healthy=True)
    bundle = make_bundle([run], course["assignment"], tmp_path / "g.zip", course["signer"])[0]
    assert verify_bundle(bundle, course["assignment"], course["signer"]).verified
    _rewrite(bundle, change)
    found = verify_bundle(bundle, course["assignment"], course["signer"])
    assert not found.verified
    assert any(problem in p for p in found.problems), found.problems


def test_a_bundle_signed_with_another_key_or_not_a_zip_does_not_verify(
    course: dict[str, Any], tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", course, "ivan", healthy=True)
    bundle = make_bundle([run], course["assignment"], tmp_path / "i.zip", course["signer"])[0]
    wrong = verify_bundle(bundle, course["assignment"], b"\x00" * 32)
    assert not wrong.verified and "signature does not match" in wrong.problems[0]
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    found = verify_bundle(junk, course["assignment"], course["signer"])
    assert not found.verified and "not a readable bundle" in found.problems[0]


def test_a_run_without_a_seal_or_for_another_student_is_unverifiable(
    course: dict[str, Any], tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", course, "jo", healthy=True)
    edit_result(run, lambda d: d.pop("seal"))
    bundle = make_bundle([run], course["assignment"], tmp_path / "j.zip", course["signer"])[0]
    found = verify_bundle(bundle, course["assignment"], course["signer"])
    assert any("carries no seal" in p for r in found.runs for p in r.problems)
    other = make_run(tmp_path / "other", course, "kim", healthy=True)
    with pytest.raises(Exception, match="one student's runs"):
        make_bundle([run, other], course["assignment"], tmp_path / "x.zip", course["signer"])


def test_late_runs_are_graded_and_flagged(course: dict[str, Any], tmp_path: Path) -> None:
    assignment = course["assignment"]
    late = assignment.due + timedelta(hours=2)  # type: ignore[operator]
    run = make_run(tmp_path / "run", course, "lee", healthy=True, finished=late)
    bundle = make_bundle([run], assignment, tmp_path / "l.zip", course["signer"])[0]
    grades = grade_all(course, [bundle], tmp_path / "gb")
    assert grades["lee"].verified and grades["lee"].late and grades["lee"].score == 4
    assert "late" in (tmp_path / "gb" / "gradebook.html").read_text()


def test_old_results_still_read_and_newer_majors_are_refused() -> None:
    old = json.loads(sample_result().model_dump_json())
    old["schema_version"] = "1.0"
    for field in ("provenance", "seal"):
        old.pop(field)
    for check in old["checks"]:
        check.pop("raw")
    loaded = RunResult.model_validate(old)
    assert loaded.provenance is None and loaded.checks[0].raw is None
    again = reevaluate(SPECS["toy"][0], loaded.checks[0].raw)
    assert not again.passed and again.error
    old["schema_version"] = "2.0"
    with pytest.raises(ValueError, match="not readable"):
        RunResult.model_validate(old)


def test_cli_grade_exit_codes_and_one_line_errors(course: dict[str, Any], tmp_path: Path) -> None:
    from lab import app

    runner = CliRunner()
    empty = tmp_path / "none"
    empty.mkdir()
    args = ["--assignment", str(course["public"]), "--key", str(course["private"])]
    nothing = runner.invoke(app, ["grade", str(empty), *args, "--out", str(tmp_path / "o")])
    assert nothing.exit_code == 3
    wrong_key = runner.invoke(
        app,
        [
            "grade",
            str(empty),
            "--assignment",
            str(course["public"]),
            "--key",
            str(course["public"]),
        ],
    )
    assert wrong_key.exit_code == 2
    assert "Traceback" not in wrong_key.output
    run = runner.invoke(
        app, ["run", "order-race", "--assignment", str(course["public"])], env={"CNOP_STUDENT": ""}
    )
    assert run.exit_code == 2
    assert "does not ask for order-race" in run.output or "student" in run.output


def test_the_seal_survives_lab_report_but_not_an_edited_provenance(
    course: dict[str, Any], tmp_path: Path
) -> None:
    from grader.bundles import seal_valid
    from grader.report import load_result

    run = make_run(tmp_path / "run", course, "nia", healthy=True)
    render_run(load_result(run), run)  # what `lab report RUN_DIR` does
    data = json.loads((run / "result.json").read_text())
    assert seal_valid(data, course["signer"])
    data["provenance"]["student"] = "someone-else"
    assert not seal_valid(data, course["signer"])


def test_a_run_sealed_before_phases_had_notes_survives_lab_report(
    course: dict[str, Any], tmp_path: Path
) -> None:
    """Schema 1.2 added `about` to each phase; `lab report` on a run sealed by an older lab
    writes it into result.json, and the seal must still verify."""
    from grader.bundles import _mac, _sealed_bytes, seal_valid
    from grader.report import load_result

    run = make_run(tmp_path / "run", course, "ria", healthy=True)
    data = json.loads((run / "result.json").read_text())
    for phase in data["phases"]:
        phase.pop("about", None)  # as a 1.1 lab wrote it
    data["schema_version"] = "1.1"
    data["seal"]["mac"] = _mac(course["signer"], _sealed_bytes(data))
    (run / "result.json").write_text(json.dumps(data))
    render_run(load_result(run), run)  # `lab report RUN_DIR` with this version
    again = json.loads((run / "result.json").read_text())
    assert all("about" in phase for phase in again["phases"])
    assert seal_valid(again, course["signer"])


def test_a_run_with_other_settings_than_assigned_is_flagged(
    course: dict[str, Any], tmp_path: Path
) -> None:
    def weakened(data: dict[str, Any]) -> None:
        data["provenance"]["settings"] = {
            "all": {"CNOP_GEMINI_API_KEY": "<redacted>"},
            "gateway": {"CNOP_RATE_LIMIT_ENABLED": "false"},
        }

    quiet = make_run(tmp_path / "quiet", course, "olu", healthy=True)
    edit_result(
        quiet,
        lambda d: d["provenance"].update(settings={"all": {"CNOP_GEMINI_API_KEY": "<redacted>"}}),
    )
    loud = make_run(tmp_path / "loud", course, "pat", healthy=True)
    edit_result(loud, weakened)
    # Re-seal as `lab run` would have, since these settings were in force during the run.
    for folder in (quiet, loud):
        data = RunResult.model_validate_json((folder / "result.json").read_text())
        render_run(seal_result(data, course["signer"], course["assignment"].key_id), folder)
    bundles = [
        make_bundle([f], course["assignment"], tmp_path / f"{f.name}.zip", course["signer"])[0]
        for f in (quiet, loud)
    ]
    grades = grade_all(course, bundles, tmp_path / "gb")
    assert grades["olu"].verified and not grades["olu"].flags
    assert grades["pat"].verified
    assert any("CNOP_RATE_LIMIT_ENABLED" in f for f in grades["pat"].flags)


def test_a_bundle_naming_a_path_as_student_never_writes_outside_the_gradebook(
    course: dict[str, Any], tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", course, "quinn", healthy=True)
    bundle = make_bundle([run], course["assignment"], tmp_path / "q.zip", course["signer"])[0]
    _rewrite(
        bundle,
        lambda m: m.update(
            {"manifest.json": m["manifest.json"].replace(b'"quinn"', b'"../../escaped"')}
        ),
    )
    out = tmp_path / "deep" / "gb"
    grades = grade_all(course, [bundle], out)
    [grade] = grades.values()
    assert not grade.verified
    assert grade.student == "q"
    assert (out / "results" / "q" / "results.json").exists()
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()


def test_malformed_sealed_evidence_is_listed_not_a_crash(
    course: dict[str, Any], tmp_path: Path
) -> None:
    """A run crafted with the signing key (re-sealed after nonsense was put in) is graded as
    failing checks or listed as malformed; grading never stops."""
    from grader.bundles import _mac, _sealed_bytes

    run = make_run(tmp_path / "run", course, "ray", healthy=True)

    def nonsense(data: dict[str, Any]) -> None:
        data["checks"][0]["raw"] = {"phases": "x", "params": [1, 2], "traffic": 3}
        data["checks"][1]["raw"] = "not even a dict"
        data["seal"]["mac"] = _mac(course["signer"], _sealed_bytes(data))

    edit_result(run, nonsense)
    odd = make_run(tmp_path / "odd", course, "sam", healthy=True)

    def provenance_list(data: dict[str, Any]) -> None:
        data["provenance"]["settings"] = ["not", "a", "mapping"]
        data["seal"]["mac"] = _mac(course["signer"], _sealed_bytes(data))

    edit_result(odd, provenance_list)
    bundles = [
        make_bundle([f], course["assignment"], tmp_path / f"{f.name}.zip", course["signer"])[0]
        for f in (run, odd)
    ]
    grades = grade_all(course, bundles, tmp_path / "gb")
    assert grades["ray"].verified and grades["ray"].score == 0
    assert all(g.result.error for g in grades["ray"].checks.values())
    assert not grades["sam"].verified
    assert any("malformed" in p for p in grades["sam"].problems)
