"""`lab assignment new`, `lab submit`, `lab grade`: a class's runs, from assignment to gradebook.

Thin faces over :mod:`grader.assignments`, :mod:`grader.bundles` and :mod:`grader.gradebook`.
Usage errors print one line and exit 2; ``lab grade`` exits 3 when it could not grade (no
bundle found, an assigned scenario missing from this checkout), 0 when it wrote a gradebook
of verified bundles, 1 when it wrote one in which some bundle is unverifiable (listed in it,
not fatal). ``--json`` shapes: docs/cli.md.
docs/instructors.md walks through all three.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from grader.assignments import (
    Assignment,
    AssignmentError,
    AssignmentKey,
    AssignmentScenario,
    load_assignment,
    load_key,
    new_assignment,
    signing_key,
    write_assignment,
)
from grader.bundles import BundleError, make_bundle, verify_bundle
from grader.gradebook import grade_bundle, write_gradebook
from grader.model import CheckSpec
from scenarios.cli_student import check_with_service
from scenarios.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonOption,
    Unavailable,
    UsageError,
    finish,
)
from scenarios.provenance import file_sha256
from scenarios.runtime.base import SERVICES
from scenarios.schema import ScenarioError, available, find, load_scenario

assignment_app = typer.Typer(help="Create assignments for a class.", no_args_is_help=True)
_SETTING = re.compile(r"^(?P<service>[a-z]+):(?P<key>CNOP_[A-Z0-9_]+)=(?P<value>.*)$")


def register(app: typer.Typer) -> None:
    app.add_typer(assignment_app, name="assignment")
    app.command("submit")(submit)
    app.command("grade")(grade)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise (UsageError if code == EXIT_USAGE else Unavailable)(message)


def _due(text: str | None) -> datetime | None:
    """An ISO date (due at the end of that day, UTC) or an ISO date and time."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(23, 59, 59), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--due {text!r}: expected an ISO date (2026-12-01) or date and time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _settings(weaken: list[str], scenarios: list[str], option: str) -> dict[str, dict[str, str]]:
    settings: dict[str, dict[str, str]] = {}
    for item in weaken:
        match = _SETTING.match(item)
        if match:
            settings.setdefault(match["service"], {})[match["key"]] = match["value"]
            continue
        if item in scenarios:  # that scenario's own `weaken:` block (what `lab selftest` uses)
            for service, env in load_scenario(find(item)).weaken.items():
                settings.setdefault(service, {}).update(env)
            continue
        flaw = _flaws().get(item)
        if flaw is not None:  # a flaw of security/flaws.yaml: its settings
            for service, env in flaw.env.items():
                settings.setdefault(service, {}).update(env)
            continue
        _fail(
            f"{option} {item!r}: expected SERVICE:CNOP_SETTING=VALUE, the name of an assigned "
            "scenario (its `weaken:` settings) or of a flaw (`lab flaws`)"
        )
    return settings


def _flaws() -> dict[str, Any]:
    """The flaw catalogue, or none when this checkout has no flaws."""
    try:
        from scenarios.flaws import FlawError, load_flaws
    except ImportError:
        return {}
    try:
        return dict(load_flaws())
    except FlawError as exc:
        _fail(str(exc))


def _check_known(settings: dict[str, dict[str, str]]) -> None:
    """Every setting must be one its service understands, with a value it accepts: a typo
    would make a challenge that nothing is wrong with."""
    for service, env in settings.items():
        if service not in SERVICES:
            _fail(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
        problems = check_with_service(service, env)
        if problems:
            _fail(f"{service}: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))


@assignment_app.command("new")
def assignment_new(
    name: Annotated[str, typer.Argument(help="the assignment's name, e.g. week3-resilience")],
    scenario: Annotated[
        list[str], typer.Option("--scenario", help="a drill students must run (repeatable)")
    ],
    weaken: Annotated[
        list[str] | None,
        typer.Option(
            "--weaken",
            help="SERVICE:CNOP_SETTING=VALUE, an assigned scenario's name for its own "
            "`weaken:` settings, or a flaw's name (`lab flaws`); runs must use them (repeatable)",
        ),
    ] = None,
    challenge: Annotated[
        list[str] | None,
        typer.Option(
            "--challenge",
            help="like --weaken (a flaw's name too), but hidden: `lab up --assignment FILE` "
            "starts the platform with it, and students must find and fix it (repeatable)",
        ),
    ] = None,
    due: Annotated[str | None, typer.Option(help="ISO date or date-time (UTC)")] = None,
    hint_cost: Annotated[
        int, typer.Option(min=0, help="points each revealed hint (`lab hint`) costs")
    ] = 0,
    out: Annotated[Path, typer.Option(help="folder for the two files")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Write an assignment for students and, apart, its secret key for the instructor."""
    names = list(dict.fromkeys(scenario))
    picked = []
    try:
        for item in names:
            path = find(item)
            loaded = load_scenario(path)
            picked.append(
                AssignmentScenario(
                    name=item, sha256=file_sha256(path), parameters=dict(loaded.parameters)
                )
            )
        settings = _settings(weaken or [], names, "--weaken")
        hidden = _settings(challenge or [], names, "--challenge")
        _check_known(settings)
        _check_known(hidden)
        assignment, key = new_assignment(
            name,
            picked,
            due=_due(due),
            hint_cost=hint_cost,
            settings=settings,
            challenge=(
                {"settings": hidden, "flaws": [c for c in challenge or [] if c in _flaws()]}
                if hidden
                else None
            ),
        )
        public, private = write_assignment(assignment, key, out)
    except (ScenarioError, AssignmentError) as exc:
        _fail(str(exc))
    if as_json:
        finish(
            "assignment new",
            EXIT_OK,
            True,
            name=assignment.name,
            key_id=assignment.key_id,
            assignment=str(public),
            key=str(private),
        )
    print(f"assignment {assignment.name} (key id {assignment.key_id})")
    print(f"  for students:       {public}  (hand it out: names the drills, signs the runs)")
    print(f"  for the instructor: {private}  (mode 0600, keep it secret: `lab grade` needs it)")
    if hidden:
        print(
            "  challenge: students start it with `lab up --assignment FILE`; its settings are "
            "sealed in the file (hidden, not secret: see docs/instructors.md)"
        )


def _find_assignment(run_dirs: list[Path]) -> Path:
    """The assignment a student's runs were made for, among ``*.assignment.json`` here."""
    wanted = set()
    for run_dir in run_dirs:
        path = run_dir / "result.json" if run_dir.is_dir() else run_dir
        try:
            ref = (json.loads(path.read_text()).get("provenance") or {}).get("assignment") or {}
        except (OSError, ValueError):
            continue
        if ref.get("key_id"):
            wanted.add(ref["key_id"])
    for candidate in sorted(Path(".").glob("*.assignment.json")):
        try:
            if load_assignment(candidate).key_id in wanted:
                return candidate
        except AssignmentError:
            continue
    _fail("no --assignment given and no matching *.assignment.json in this folder")


def submit(
    run_dirs: Annotated[list[Path], typer.Argument(help="run folders (each holds result.json)")],
    assignment: Annotated[
        Path | None, typer.Option(help="the assignment file (default: found in this folder)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="bundle file (default STUDENT-NAME.zip)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Pack your runs for an assignment into one signed bundle to hand in."""
    path = assignment or _find_assignment(run_dirs)
    try:
        loaded = load_assignment(path)
        key = bytes.fromhex(loaded.signing_key)
        target = out or Path(f"submission-{loaded.name}.zip")
        written, student = make_bundle(run_dirs, loaded, target, key)
    except (AssignmentError, BundleError, ValueError) as exc:
        _fail(str(exc))
    if out is None:
        final = written.with_name(f"{student}-{loaded.name}.zip")
        written.replace(final)
        written = final
    if as_json:
        finish(
            "submit",
            EXIT_OK,
            True,
            bundle=str(written),
            student=student,
            assignment=loaded.name,
            runs=len(run_dirs),
        )
    print(f"bundle {written}: {len(run_dirs)} run(s) of {student} for {loaded.name}; hand it in")


def _bundles(sources: list[Path]) -> list[Path]:
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found.extend(sorted(source.rglob("*.zip")))
        elif source.exists():
            found.append(source)
        else:
            _fail(f"{source}: no such file or folder")
    return list(dict.fromkeys(found))


def _instructor_checks(assignment: Assignment) -> tuple[dict[str, list[CheckSpec]], dict]:
    specs: dict[str, list[CheckSpec]] = {}
    digests: dict[str, str] = {}
    files = available()
    for item in assignment.scenarios:
        if item.name not in files:
            _fail(f"scenario {item.name} is not in this lab's scenarios/ (update your checkout)", 3)
        overrides = {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in item.parameters.items()
        }
        try:
            scenario = load_scenario(files[item.name], overrides)
        except ScenarioError as exc:
            _fail(str(exc), 3)
        specs[item.name] = list(scenario.checks)
        digests[item.name] = file_sha256(files[item.name])
    return specs, digests


def grade(
    sources: Annotated[list[Path], typer.Argument(help="bundles (.zip) or folders of them")],
    assignment: Annotated[Path, typer.Option(help="the assignment file")],
    key: Annotated[Path, typer.Option(help="the instructor's key file")],
    out: Annotated[Path, typer.Option(help="folder for the gradebook")] = Path("gradebook"),
    as_json: JsonOption = False,
) -> None:
    """Verify every bundle, grade each check again from its evidence, write the gradebook."""
    try:
        loaded = load_assignment(assignment)
        secret: AssignmentKey = load_key(key)
        signer = signing_key(loaded, secret)
    except AssignmentError as exc:
        _fail(str(exc))
    bundles = _bundles(sources)
    if not bundles:
        _fail("no bundle (*.zip) found to grade", 3)
    specs, digests = _instructor_checks(loaded)
    graded = []
    for path in bundles:
        verified = verify_bundle(path, loaded, signer)
        graded.append((verified.created_at or "", grade_bundle(verified, loaded, specs, digests)))
    # One grade per student: their newest bundle; the older ones are noted.
    graded.sort(key=lambda pair: pair[0])
    newest = {g.student: g for _, g in graded}
    chosen = list(newest.values())
    for g in chosen:
        older = [x.bundle for _, x in graded if x.student == g.student and x is not g]
        if older:
            g.flags.append(f"also handed in {', '.join(older)}; graded {g.bundle}")
    written = write_gradebook(chosen, loaded, specs, out)
    unverifiable = [g for g in chosen if not g.verified]
    code = EXIT_FAILED if unverifiable else EXIT_OK
    if as_json:
        finish(
            "grade",
            code,
            True,
            assignment=loaded.name,
            files={label: str(path) for label, path in written.items()},
            students=[
                {
                    "student": g.student,
                    "bundle": g.bundle,
                    "verified": g.verified,
                    "late": g.late,
                    "score": g.score,
                    "max_score": sum(c.result.max_points for c in g.checks.values()),
                    "failed_checks": [k for k, c in g.checks.items() if not c.result.passed],
                    "regraded": g.regraded,
                    "problems": g.problems,
                    "flags": g.flags,
                }
                for g in chosen
            ],
        )
    print(
        f"graded {len(chosen) - len(unverifiable)} of {len(chosen)} students "
        f"({len(unverifiable)} unverifiable) for {loaded.name}"
    )
    for g in unverifiable:
        print(f"  unverifiable: {g.student}: {'; '.join(g.problems)}")
    for label, path in written.items():
        print(f"  {label:8} {path}")
    raise typer.Exit(code)
