"""`lab scenarios/run/drill/report/reset/selftest`: run drills against a running sandbox.

User errors (unknown scenario, bad ``--param``, invalid YAML) print one line on stderr and exit 2;
a platform that is not running is one line and exit 1. ``lab run`` exits 0 only when every
required check passed (and the steady state held).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grader.model import RunResult
from grader.report import Expectation, load_result, render_index, render_run
from scenarios.config import LabConfig
from scenarios.engine import EngineError, new_seed, run_scenario, run_selftest
from scenarios.provenance import RunTags, TagError, assigned_settings, run_tags
from scenarios.runtime import current_runtime
from scenarios.runtime.base import INFRA, SERVICES, Runtime, RuntimeError_
from scenarios.schema import (
    Scenario,
    ScenarioError,
    available,
    find,
    load_scenario,
    parse_overrides,
)

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("scenarios")(scenarios)
    app.command("run")(run)
    app.command("drill")(drill)
    app.command("report")(report)
    app.command("reset")(reset)
    app.command("selftest")(selftest)


# --- helpers ------------------------------------------------------------------------------


def _usage_error(message: str) -> NoReturn:
    print(f"lab: {message}", file=sys.stderr)
    raise typer.Exit(2)


def _runtime() -> Runtime:
    config = LabConfig()
    runtime = current_runtime(config)
    if runtime is None or not runtime.is_up():
        raise RuntimeError_("the platform is not running; run `lab up` first")
    return runtime


def _load(name: str, params: list[str] | None = None) -> Scenario:
    try:
        return load_scenario(find(name), parse_overrides(params))
    except ScenarioError as exc:
        _usage_error(str(exc))


StudentOption = Annotated[
    str | None,
    typer.Option("--student", help="your student id (default: $CNOP_STUDENT); recorded in the run"),
]
AssignmentOption = Annotated[
    Path | None,
    typer.Option(
        "--assignment",
        help="an assignment file from your instructor: tags and seals the run (needs --student)",
    ),
]


def _tags(student: str | None, assignment: Path | None, names: list[str]) -> RunTags:
    try:
        return run_tags(student, assignment, names)
    except TagError as exc:
        _usage_error(str(exc))


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _progress(quiet: bool) -> Callable[[str], None]:
    target = err_console if quiet else console

    def say(text: str) -> None:
        target.print(text, highlight=False, markup=False)

    return say


def _print_result(result: RunResult, out_dir: Path | None, target: Console) -> None:
    table = Table(
        title=f"{result.scenario} ({result.mode_label}, seed {result.seed})", expand=False
    )
    table.add_column("id", no_wrap=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("points", justify="right")
    table.add_column("observed")
    for check in result.checks:
        verdict = "[green]PASS[/]" if check.passed else "[red]FAIL[/]"
        if not check.required and not check.passed:
            verdict = "[yellow]FAIL (optional)[/]"
        observed = check.error or str(check.evidence.get("observed", ""))
        table.add_row(
            check.id, check.title, verdict, f"{check.points}/{check.max_points}", observed[:60]
        )
    target.print(table)
    for error in result.errors:
        target.print(f"[red]error:[/] {error}", highlight=False)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    where = f"  report: {out_dir / 'report.html'}" if out_dir else ""
    target.print(
        f"{verdict} score {result.score}/{result.max_score} in {result.duration_s:.1f}s{where}"
    )


# --- commands -----------------------------------------------------------------------------


def scenarios() -> None:
    """List the drills with a one-line description each."""
    table = Table(expand=False)
    table.add_column("scenario")
    table.add_column("description")
    table.add_column("checks", justify="right")
    broken = False
    for name, path in available().items():
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            table.add_row(name, f"[red]invalid: {exc}[/]", "-")
            broken = True
            continue
        table.add_row(name, scenario.description, str(len(scenario.checks)))
    console.print(table)
    if broken:
        raise typer.Exit(1)


def run(
    name: Annotated[str, typer.Argument(help="a scenario (see `lab scenarios`)")],
    seed: Annotated[int | None, typer.Option(help="makes the traffic reproducible")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="override a parameter: KEY=VALUE")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default runs/NAME-TIME)")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the result as JSON on stdout")
    ] = False,
    student: StudentOption = None,
    assignment: AssignmentOption = None,
) -> None:
    """Run one drill and grade it; exits 0 only when every required check passed."""
    scenario = _load(name, param)
    tags = _tags(student, assignment, [scenario.name])
    runtime = _runtime()
    out_dir = out or Path("runs") / f"{scenario.name}-{_stamp()}"
    chosen = seed if seed is not None else new_seed()
    say = _progress(as_json)
    result = _run_tagged(scenario, runtime, tags, seed=chosen, out_dir=out_dir, say=say)
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        _print_result(result, out_dir, console)
    raise typer.Exit(0 if result.passed else 1)


def _run_tagged(
    scenario: Scenario,
    runtime: Runtime,
    tags: RunTags,
    *,
    seed: int,
    out_dir: Path,
    say: Callable[[str], None],
) -> RunResult:
    """One run as `lab run` and `lab drill` make it: under an assignment's settings (then it is
    a weakened run of exactly those), tagged and sealed for submission."""
    settings = tags.assignment.settings if tags.assignment else {}
    try:
        with assigned_settings(runtime, tags, say):
            return run_scenario(
                scenario,
                runtime,
                seed=seed,
                out_dir=out_dir,
                progress=say,
                tags=tags,
                mode="weakened" if settings else "hardened",
                overlay=settings,
            )
    except EngineError as exc:
        raise RuntimeError_(str(exc)) from exc


def drill(
    out: Annotated[Path | None, typer.Option(help="folder (default runs/drill-TIME)")] = None,
    seed: Annotated[int | None, typer.Option(help="one seed for every scenario")] = None,
    student: StudentOption = None,
    assignment: AssignmentOption = None,
) -> None:
    """Run every scenario (an assignment's, with --assignment) in turn and write an index page
    over their reports."""
    tags = _tags(student, assignment, [])
    names = [s.name for s in tags.assignment.scenarios] if tags.assignment else list(available())
    loaded = [_load(name) for name in names]
    runtime = _runtime()
    out_dir = out or Path("runs") / f"drill-{_stamp()}"
    chosen = seed if seed is not None else new_seed()
    results: list[tuple[Path, RunResult]] = []
    started = time.monotonic()
    say = _progress(False)
    for scenario in loaded:
        console.rule(f"{scenario.name}: {scenario.title}")
        run_dir = out_dir / scenario.name
        result = _run_tagged(scenario, runtime, tags, seed=chosen, out_dir=run_dir, say=say)
        _print_result(result, run_dir, console)
        results.append((run_dir, result))
    render_index(results, out_dir)
    table = Table(title=f"drill (seed {chosen})", expand=False)
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("score", justify="right")
    table.add_column("duration", justify="right")
    for _, result in results:
        verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        table.add_row(
            result.scenario,
            verdict,
            f"{result.score}/{result.max_score}",
            f"{result.duration_s:.1f}s",
        )
    console.print(table)
    console.print(
        f"total {time.monotonic() - started:.1f}s; index: {out_dir / 'index.html'}",
        highlight=False,
    )
    raise typer.Exit(0 if results and all(r.passed for _, r in results) else 1)


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder holding result.json")],
) -> None:
    """Re-render a run's reports from its result.json."""
    try:
        result = load_result(run_dir)
    except FileNotFoundError:
        _usage_error(f"{run_dir} holds no result.json")
    except ValueError as exc:
        _usage_error(f"{run_dir}: result.json is not a run result ({str(exc).splitlines()[0]})")
    target = run_dir if run_dir.is_dir() else run_dir.parent
    render_run(result, target)
    console.print(f"rendered {target / 'report.html'}", highlight=False)


def reset() -> None:
    """Undo any drill's leftovers: faults, limiter/lock/block keys, paused, stopped and
    reconfigured services, and every flaw switched on."""
    runtime = _runtime()
    cleared = runtime.clear_faults()
    console.print(f"cleared {cleared} fault flags", highlight=False)
    states = {s.name: s.state for s in runtime.status()}
    for name in [*INFRA, *SERVICES]:
        state = states.get(name)
        if state == "paused":
            console.print(f"resume {name}", highlight=False)
            runtime.resume(name)
        elif state in ("stopped", "exited"):
            console.print(f"start {name}", highlight=False)
            runtime.start(name)
    flawed = sorted(runtime.flaws_in_force())
    if flawed:
        console.print(f"flaws off: {', '.join(flawed)}", highlight=False)
        runtime.set_flaws({})
    for name in SERVICES:
        console.print(f"{name}: default settings", highlight=False)
        runtime.reconfigure(name, None)
    keys = runtime.clear_state_keys()
    console.print(
        f"cleared {keys} state keys; the platform is back to its defaults", highlight=False
    )


def selftest(
    only: Annotated[
        str | None, typer.Option(help="just this scenario (with --security: this flaw)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder (default runs/selftest-TIME)")] = None,
    seed: Annotated[int | None, typer.Option(help="one seed for every run")] = None,
    student: StudentOption = None,
    security: Annotated[
        bool,
        typer.Option(
            "--security",
            help="prove the scans instead: hardened no finding, each flaw on found by a probe",
        ),
    ] = False,
) -> None:
    """Prove each drill's checks: hardened they pass, with the protection off they fail.

    With --security: the hardened platform's offline scan finds nothing at WARN or above, and
    each flaw of security/flaws.yaml, switched on alone, is named by a finding."""
    if security:
        from scenarios.cli_security import security_selftest

        security_selftest(only, out, seed)
        return
    names = [only] if only else list(available())
    loaded = [_load(name) for name in names]
    tags = _tags(student, None, names)
    runtime = _runtime()
    out_dir = out or Path("runs") / f"selftest-{_stamp()}"
    chosen = seed if seed is not None else new_seed()
    say = _progress(False)
    outcomes = []
    results: list[tuple[Path, RunResult]] = []
    expectations: list[Expectation] = []
    for scenario in loaded:
        console.rule(f"selftest {scenario.name}")
        try:
            outcome = run_selftest(
                scenario, runtime, seed=chosen, out_dir=out_dir, progress=say, tags=tags
            )
        except EngineError as exc:
            raise RuntimeError_(str(exc)) from exc
        outcomes.append(outcome)
        runs = (
            ("hardened", outcome.hardened, "every required check passes", outcome.hardened_ok),
            ("weakened", outcome.weakened, "its guarded checks fail", outcome.weakened_ok),
        )
        for mode, result, wanted, met in runs:
            if result is not None:
                results.append((out_dir / f"{scenario.name}-{mode}", result))
                expectations.append(Expectation(wanted, met))
    render_index(results, out_dir, expectations=expectations)
    table = Table(title=f"selftest (seed {chosen})", expand=False)
    table.add_column("scenario")
    table.add_column("hardened passes")
    table.add_column("weakened fails guarded checks")
    table.add_column("problems")
    for o in outcomes:
        table.add_row(
            o.scenario,
            "[green]yes[/]" if o.hardened_ok else "[red]no[/]",
            "[green]yes[/]" if o.weakened_ok else "[red]no[/]",
            "; ".join(o.problems)[:120],
        )
    console.print(table)
    console.print(f"index: {out_dir / 'index.html'}", highlight=False)
    raise typer.Exit(0 if outcomes and all(o.ok for o in outcomes) else 1)
