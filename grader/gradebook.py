"""A class gradebook from verified bundles: every check graded again from its raw evidence.

For each bundle: verify it (:func:`grader.bundles.verify_bundle`); an unverifiable bundle is
listed with its reasons and gets no grade. For a verified one, the newest run of each assigned
scenario is graded again, check by check, with the *instructor's* check specs
(:func:`grader.evaluate.reevaluate`), so a verdict edited in result.json or a threshold edited
in the student's scenario file changes nothing. Late runs, runs of a modified scenario file,
other parameters or settings than assigned are graded but flagged.

Outputs (:func:`write_gradebook`): ``gradebook.html`` (students x checks), ``gradebook.csv``
(Canvas/Moodle import: identity columns and one score column), ``gradebook-detail.csv`` (per
check points, status, flags), ``results/STUDENT/results.json`` (Gradescope's autograder
format) and one ``junit.xml``.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from grader.assignments import STUDENT_PATTERN, Assignment
from grader.bundles import VerifiedBundle
from grader.evaluate import reevaluate
from grader.model import CheckResult, CheckSpec

REDACTED = "<redacted>"  # how provenance records a secret setting (scenarios.provenance)

__all__ = [
    "CSV_COLUMNS",
    "StudentGrade",
    "grade_bundle",
    "write_gradebook",
]

# Canvas's gradebook import columns (Moodle maps "SIS User ID" or "SIS Login ID" to a user
# field when importing); the score column is named after the assignment.
CSV_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


@dataclass
class GradedCheck:
    scenario: str
    result: CheckResult
    claimed: bool | None = None  # what the student's result.json said


@dataclass
class StudentGrade:
    student: str
    bundle: str
    verified: bool
    problems: list[str] = field(default_factory=list)  # why it is unverifiable
    flags: list[str] = field(default_factory=list)  # graded, but look at this
    late: bool = False
    checks: dict[str, GradedCheck] = field(default_factory=dict)  # "scenario/check" -> grade
    runs: dict[str, str] = field(default_factory=dict)  # scenario -> run finished at (ISO)
    hints: dict[str, int] = field(default_factory=dict)  # scenario -> hints revealed before it
    hint_cost: int = 0  # the assignment's points per hint

    @property
    def hint_penalty(self) -> int:
        return self.hint_cost * sum(self.hints.values())

    @property
    def score(self) -> int:
        """Points of the passed checks, less what the hints cost (never below 0)."""
        return max(0, sum(g.result.points for g in self.checks.values()) - self.hint_penalty)

    @property
    def regraded(self) -> list[str]:
        """Checks whose verdict in the student's result.json differs from the grader's."""
        return [
            key
            for key, g in self.checks.items()
            if g.claimed is not None and g.claimed != g.result.passed
        ]


def _parse_time(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _safe_student(claimed: str | None, path: Path) -> str:
    """The id a bundle claims when it is a valid one, else one made from the file name: the id
    names a folder of the gradebook, so ``../x`` must never get there."""
    if claimed and re.match(STUDENT_PATTERN, claimed):
        return claimed
    stem = re.sub(r"[^A-Za-z0-9._@+-]", "_", path.stem)[:60].lstrip("._-+@") or "bundle"
    return stem


def grade_bundle(
    bundle: VerifiedBundle,
    assignment: Assignment,
    specs: dict[str, list[CheckSpec]],
    scenario_sha256: dict[str, str],
) -> StudentGrade:
    """One student's grade; ``specs`` are the instructor's checks per scenario (loaded with the
    assignment's parameters), ``scenario_sha256`` the instructor's scenario file digests."""
    grade = StudentGrade(
        student=_safe_student(bundle.student, bundle.path),
        bundle=bundle.path.name,
        verified=bundle.verified,
        problems=[*bundle.problems, *(f"{r.member}: {p}" for r in bundle.runs for p in r.problems)],
        hint_cost=assignment.hint_cost,
    )
    if bundle.student and grade.student != bundle.student:
        grade.verified = False
        grade.problems.append(f"the bundle names an invalid student id {bundle.student[:80]!r}")
    if not grade.verified:
        return grade
    try:
        _grade_runs(grade, bundle, assignment, specs, scenario_sha256)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # Only a run crafted with the signing key gets here: it is listed, never half graded.
        grade.verified = False
        grade.checks.clear()
        grade.problems.append(f"the run data is malformed ({type(exc).__name__}: {exc})")
    return grade


def _grade_runs(
    grade: StudentGrade,
    bundle: VerifiedBundle,
    assignment: Assignment,
    specs: dict[str, list[CheckSpec]],
    scenario_sha256: dict[str, str],
) -> None:
    newest: dict[str, dict[str, Any]] = {}
    for run in bundle.runs:
        name = str(run.data.get("scenario"))
        if name not in specs:
            grade.flags.append(f"a run of {name}, which the assignment does not ask for")
            continue
        if name not in newest or str(run.data.get("finished_at")) > str(
            newest[name].get("finished_at")
        ):
            newest[name] = run.data
    for name, checks in specs.items():
        data = newest.get(name)
        if data is None:
            grade.flags.append(f"no run of {name}")
            continue
        grade.runs[name] = str(data.get("finished_at", ""))
        _flag_run(grade, name, data, assignment, scenario_sha256.get(name))
        _count_hints(grade, name, data)
        claimed = {c.get("id"): c for c in data.get("checks") or [] if isinstance(c, dict)}
        for spec in checks:
            mine = claimed.get(spec.id)
            result = reevaluate(spec, (mine or {}).get("raw"))
            grade.checks[f"{name}/{spec.id}"] = GradedCheck(
                scenario=name,
                result=result,
                claimed=bool(mine.get("passed")) if mine else None,
            )
    if grade.regraded:
        grade.flags.append(
            "result.json claims other verdicts than its evidence shows: "
            + ", ".join(grade.regraded)
        )


def _flag_run(
    grade: StudentGrade,
    name: str,
    data: dict[str, Any],
    assignment: Assignment,
    instructor_sha: str | None,
) -> None:
    provenance = data.get("provenance") or {}
    finished = _parse_time(data.get("finished_at"))
    if assignment.due is not None and finished is not None and finished > assignment.due:
        grade.late = True
        grade.flags.append(f"{name} ran after the due date ({finished.isoformat()})")
    assigned = assignment.scenario(name)
    ran_sha = provenance.get("scenario_sha256")
    expected = [s for s in (instructor_sha, assigned.sha256 if assigned else None) if s]
    if ran_sha and expected and ran_sha not in expected:
        grade.flags.append(f"{name} ran from a modified scenario file (sha256 {ran_sha[:12]})")
    if assigned and assigned.parameters and data.get("params") != assigned.parameters:
        grade.flags.append(f"{name} ran with other parameters than assigned")
    settings = _comparable(provenance.get("settings") or {})
    if assignment.challenge:
        # A challenge is fixed by changing settings: what the student changed is shown, and
        # the run must have been made under the challenge itself.
        ran = (provenance.get("challenge") or {}).get("token")
        if ran != assignment.challenge:
            grade.flags.append(
                f"{name} did not run under the challenge's hidden settings "
                "(the platform was not started with `lab up --assignment`)"
            )
        if settings:
            shown = json.dumps(settings, sort_keys=True)
            grade.flags.append(f"{name}: the student's fix: {shown}")
    elif settings != _comparable(assignment.settings):
        shown = json.dumps(settings, sort_keys=True) if settings else "the defaults"
        grade.flags.append(f"{name} ran with settings {shown}, not the assigned ones")


def _count_hints(grade: StudentGrade, name: str, data: dict[str, Any]) -> None:
    """Distinct hints of this drill's lab revealed before the graded run (its provenance)."""
    reveals = (data.get("provenance") or {}).get("hints") or []
    numbers = {r.get("hint") for r in reveals if isinstance(r, dict)}
    if not numbers:
        return
    grade.hints[name] = len(numbers)
    cost = f", -{grade.hint_cost * len(numbers)} points" if grade.hint_cost else ""
    grade.flags.append(f"{name}: {len(numbers)} hint(s) revealed before the run{cost}")


def _comparable(settings: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Settings as they decide a grade: secrets (recorded redacted) say nothing about it."""
    kept = {
        service: {k: v for k, v in env.items() if v != REDACTED}
        for service, env in settings.items()
    }
    return {service: env for service, env in kept.items() if env}


# --- outputs ------------------------------------------------------------------------------


def _columns(specs: dict[str, list[CheckSpec]]) -> list[dict[str, Any]]:
    return [
        {
            "key": f"{name}/{s.id}",
            "scenario": name,
            "id": s.id,
            "title": s.title,
            "points": s.points,
            "hint": s.hint,
        }
        for name, checks in specs.items()
        for s in checks
    ]


def _status(grade: StudentGrade) -> str:
    if not grade.verified:
        return "unverifiable"
    return "late" if grade.late else "graded"


def _gradescope(grade: StudentGrade, columns: list[dict[str, Any]], max_score: int) -> dict:
    tests = []
    for number, column in enumerate(columns, 1):
        graded = grade.checks.get(column["key"])
        result = graded.result if graded else None
        passed = bool(result and result.passed)
        output = ""
        if result is not None:
            comparison = result.evidence.get("comparison")
            output = result.error or (comparison if isinstance(comparison, str) else "")
            if not passed and result.hint:
                output += f"\nHint: {result.hint}"
        tests.append(
            {
                "name": f"{column['scenario']}: {column['title']}",
                "number": str(number),
                "score": result.points if result else 0,
                "max_score": column["points"],
                "status": "passed" if passed else "failed",
                "output": output.strip() or ("no run" if result is None else ""),
                "tags": [column["scenario"], column["id"]],
                "visibility": "visible",
            }
        )
    if not grade.verified:
        output = "Unverifiable submission: " + "; ".join(grade.problems)
        return {"score": 0, "max_score": max_score, "output": output, "tests": tests}
    notes = "; ".join(grade.flags)
    return {
        "score": grade.score,
        "max_score": max_score,
        "output": f"Graded from evidence. {notes}".strip(),
        "tests": tests,
    }


def _junit(grades: list[StudentGrade], columns: list[dict[str, Any]], name: str) -> str:
    suites = ET.Element("testsuites", {"name": name})
    for grade in grades:
        failures = sum(
            1
            for c in columns
            if not (grade.checks.get(c["key"]) and grade.checks[c["key"]].result.passed)
        )
        suite = ET.SubElement(
            suites,
            "testsuite",
            {
                "name": grade.student,
                "tests": str(len(columns)),
                "failures": str(failures if grade.verified else 0),
                "errors": "0" if grade.verified else str(len(columns)),
                "skipped": "0",
            },
        )
        for column in columns:
            case = ET.SubElement(
                suite,
                "testcase",
                {"classname": f"{grade.student}.{column['scenario']}", "name": column["id"]},
            )
            graded = grade.checks.get(column["key"])
            if not grade.verified:
                error = ET.SubElement(case, "error", {"message": "unverifiable submission"})
                error.text = "; ".join(grade.problems)
            elif graded is None:
                ET.SubElement(case, "failure", {"message": "no run", "type": "missing"})
            elif not graded.result.passed:
                failure = ET.SubElement(
                    case,
                    "failure",
                    {
                        "message": graded.result.hint or graded.result.error or "check failed",
                        "type": "check_failed",
                    },
                )
                failure.text = graded.result.error or str(
                    graded.result.evidence.get("comparison", "")
                )
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("grader", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _html_view(
    grades: list[StudentGrade],
    columns: list[dict[str, Any]],
    assignment: Assignment,
    max_score: int,
) -> dict[str, Any]:
    graded = [g for g in grades if g.verified]
    stats = []
    for column in columns:
        results = [g.checks.get(column["key"]) for g in graded]
        passed = sum(1 for r in results if r and r.result.passed)
        rate = passed / len(graded) if graded else 0.0
        stats.append({**column, "passed": passed, "rate": rate, "percent": round(rate * 100)})
    most_failed = sorted(
        (s for s in stats if graded and s["passed"] < len(graded)), key=lambda s: s["rate"]
    )[:5]
    rows = []
    for grade in grades:
        cells = []
        for column in columns:
            g = grade.checks.get(column["key"])
            if not grade.verified:
                cells.append(
                    {"state": "void", "text": "", "title": "unverifiable", "regraded": False}
                )
            elif g is None:
                cells.append(
                    {"state": "missing", "text": "-", "title": "no run", "regraded": False}
                )
            else:
                r = g.result
                text = f"{r.points}/{r.max_points}"
                title = r.error or str(r.evidence.get("comparison", ""))
                if g.claimed is not None and g.claimed != r.passed:
                    title = f"result.json claimed {'PASS' if g.claimed else 'FAIL'}; {title}"
                cells.append(
                    {
                        "state": "pass" if r.passed else ("error" if r.error else "fail"),
                        "text": text,
                        "title": title,
                        "regraded": g.claimed is not None and g.claimed != r.passed,
                    }
                )
        rows.append(
            {
                "student": grade.student,
                "status": _status(grade),
                "score": grade.score if grade.verified else None,
                "percent": round(100 * grade.score / max_score)
                if max_score and grade.verified
                else 0,
                "cells": cells,
                "hints": sum(grade.hints.values()),
                "hint_penalty": grade.hint_penalty,
                "flags": grade.flags,
                "problems": grade.problems,
            }
        )
    return {
        "a": assignment,
        "due": assignment.due.strftime("%Y-%m-%d %H:%M UTC") if assignment.due else "none",
        "columns": columns,
        "stats": stats,
        "most_failed": most_failed,
        "rows": rows,
        "max_score": max_score,
        "students": len(grades),
        "graded": len(graded),
        "unverifiable": [r for r in rows if r["status"] == "unverifiable"],
        "late": [r for r in rows if r["status"] == "late"],
        "flagged": [r for r in rows if r["flags"] and r["status"] != "unverifiable"],
        "mean": (sum(g.score for g in graded) / len(graded)) if graded else 0.0,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_gradebook(
    grades: Iterable[StudentGrade],
    assignment: Assignment,
    specs: dict[str, list[CheckSpec]],
    out_dir: Path,
) -> dict[str, Path]:
    """Write every output; returns name -> path."""
    ordered = sorted(grades, key=lambda g: g.student.lower())
    columns = _columns(specs)
    max_score = sum(c["points"] for c in columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    score_column = f"{assignment.name} (points of {max_score})"
    path = out_dir / "gradebook.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, score_column])
        for g in ordered:
            # An unverifiable submission gets an empty grade, never a silent 0.
            score = str(g.score) if g.verified else ""
            writer.writerow([g.student, "", g.student, g.student, "", score])
    written["csv"] = path

    path = out_dir / "gradebook-detail.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "student",
                "status",
                "score",
                "max_score",
                *(c["key"] for c in columns),
                "hints",
                "hint_penalty",
                "flags",
                "problems",
            ]
        )
        for g in ordered:
            points = [
                (str(g.checks[c["key"]].result.points) if c["key"] in g.checks else "")
                for c in columns
            ]
            writer.writerow(
                [
                    g.student,
                    _status(g),
                    g.score if g.verified else "",
                    max_score,
                    *points,
                    sum(g.hints.values()),
                    g.hint_penalty,
                    "; ".join(g.flags),
                    "; ".join(g.problems),
                ]
            )
    written["detail"] = path

    for g in ordered:
        target = out_dir / "results" / g.student / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(_gradescope(g, columns, max_score), indent=2) + "\n", encoding="utf-8"
        )
    written["results"] = out_dir / "results"

    path = out_dir / "junit.xml"
    path.write_text(_junit(ordered, columns, assignment.name), encoding="utf-8")
    written["junit"] = path

    path = out_dir / "gradebook.html"
    view = _html_view(ordered, columns, assignment, max_score)
    path.write_text(_environment().get_template("gradebook.html.j2").render(**view), "utf-8")
    written["html"] = path
    return written
