"""`lab scenarios/run/drill/report/reset/selftest`: run drills against a running sandbox.

User errors (unknown scenario, bad ``--param``, invalid YAML) print one line on stderr and exit 2;
a platform that is not running is one line and exit 3. ``lab run`` exits 0 only when every
required check passed (and the steady state held), 1 when it was graded and failed. ``--json``
prints one object on stdout (docs/cli.md); the progress lines then go to stderr.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grader.compare import compare_selftest
from grader.model import RunResult
from grader.report import Expectation, load_result, render_index, render_run
from scenarios.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOption,
    UsageError,
    finish,
    unknown_name,
)
from scenarios.config import LabConfig
from scenarios.engine import EngineError, new_seed, run_scenario, run_selftest
from scenarios.provenance import RunTags, TagError, assigned_settings, run_tags
from scenarios.runtime import current_runtime
from scenarios.runtime.base import INFRA, SERVICES, Runtime, RuntimeError_
from scenarios.schema import (
    SERVICE_NAMES,
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
    raise UsageError(message)


def _complete_scenario(incomplete: str) -> list[str]:
    """Shell completion of scenario names (`lab run up<TAB>`)."""
    return [name for name in available() if name.startswith(incomplete)]


_SETTING = re.compile(r"^(?P<service>[a-z]+):(?P<key>CNOP_[A-Z0-9_]+)=(?P<value>.*)$")


def _parse_settings(items: list[str]) -> dict[str, dict[str, str]]:
    """``SERVICE:CNOP_SETTING=VALUE`` items as {service: {setting: value}}."""
    settings: dict[str, dict[str, str]] = {}
    for item in items:
        match = _SETTING.match(item)
        if not match:
            _usage_error(f"--set {item!r}: expected SERVICE:CNOP_SETTING=VALUE")
        if match["service"] not in SERVICE_NAMES:
            unknown = unknown_name("service", match["service"], SERVICE_NAMES)
            _usage_error(f"--set {item!r}: {unknown}")
        settings.setdefault(match["service"], {})[match["key"]] = match["value"]
    return settings


@contextmanager
def _settings_in_force(
    runtime: Runtime, settings: Mapping[str, Mapping[str, str]], say: Callable[[str], None]
) -> Iterator[None]:
    """``settings`` in force for the run inside (each service restarted with them), defaults
    again afterwards, also when the run fails or is interrupted."""
    try:
        for service, env in settings.items():
            say(f"weaken {service}: {dict(env)}")
        runtime.reconfigure_many({service: dict(env) for service, env in settings.items()})
        yield
    finally:
        if settings:
            say(f"restore {', '.join(settings)} defaults")
            runtime.reconfigure_many(dict.fromkeys(settings))


def _runtime() -> Runtime:
    config = LabConfig()
    runtime = current_runtime(config)
    if runtime is None or not runtime.is_up():
        raise RuntimeError_("the platform is not running; run `lab up` first")
    return runtime


ScenarioArgument = Annotated[
    str,
    typer.Argument(help="a scenario (see `lab scenarios`)", autocompletion=_complete_scenario),
]


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


def scenarios(
    name: Annotated[
        str | None,
        typer.Argument(
            help="show this scenario's parameters, weaken switches and checks",
            autocompletion=_complete_scenario,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the drills, or show one: parameters with bounds, weaken switches, checks."""
    if name is not None:
        _scenario_detail(_load(name), as_json)
        return
    table = Table(expand=False)
    table.add_column("scenario")
    table.add_column("description")
    table.add_column("checks", justify="right")
    broken = False
    listed: list[dict[str, object]] = []
    for key, path in available().items():
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            table.add_row(key, f"[red]invalid: {exc}[/]", "-")
            listed.append({"name": key, "error": str(exc)})
            broken = True
            continue
        table.add_row(key, scenario.description, str(len(scenario.checks)))
        listed.append(
            {
                "name": key,
                "title": scenario.title,
                "description": scenario.description,
                "checks": len(scenario.checks),
                "max_score": sum(c.points for c in scenario.checks),
            }
        )
    code = EXIT_FAILED if broken else EXIT_OK
    if not as_json:
        console.print(table)
    finish("scenarios", code, as_json, scenarios=listed)


def describe_scenario(scenario: Scenario) -> dict[str, object]:
    """The `lab scenarios NAME --json` shape (docs/cli.md)."""
    return {
        "name": scenario.name,
        "title": scenario.title,
        "description": scenario.description,
        "teaches": scenario.teaches.strip(),
        "planned_seconds": scenario.planned_seconds,
        "parameters": [
            {
                "name": key,
                "type": spec.type_name,
                "default": spec.default,
                "min": spec.min,
                "max": spec.max,
                "choices": spec.choices,
                "help": spec.help,
            }
            for key, spec in scenario.parameter_specs.items()
        ],
        "weaken": scenario.weaken,
        "checks": [
            {
                "id": check.id,
                "title": check.title,
                "kind": check.kind,
                "points": check.points,
                "required": check.required,
                "guards": check.guards,
                "window": getattr(check, "window", "drill"),
                "hint": check.hint,
            }
            for check in scenario.checks
        ],
    }


def _scenario_detail(scenario: Scenario, as_json: bool) -> None:
    if as_json:
        finish("scenarios", EXIT_OK, True, scenario=describe_scenario(scenario))
    console.print(f"[bold]{scenario.name}[/]: {scenario.title}", highlight=False)
    console.print(scenario.description, highlight=False, markup=False)
    params = Table(title="parameters (--param KEY=VALUE)", expand=False, title_justify="left")
    for column in ("parameter", "type", "default", "bounds", "what"):
        params.add_column(column)
    for key, spec in scenario.parameter_specs.items():
        params.add_row(key, spec.type_name, str(spec.default), spec.bounds_text(), spec.help)
    console.print(params)
    if scenario.weaken:
        switches = "; ".join(
            f"{service}: {', '.join(f'{k}={v}' for k, v in env.items())}"
            for service, env in scenario.weaken.items()
        )
        console.print(f"weaken (lab run {scenario.name} --weaken): {switches}", markup=False)
    checks = Table(title="checks", expand=False, title_justify="left")
    for column in ("id", "kind", "points", "guards", "check"):
        checks.add_column(column)
    for check in scenario.checks:
        optional = "" if check.required else " (optional)"
        checks.add_row(
            check.id, check.kind, f"{check.points}{optional}", check.guards or "-", check.title
        )
    console.print(checks)


def run(
    name: ScenarioArgument,
    seed: Annotated[int | None, typer.Option(help="makes the traffic reproducible")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="override a parameter: KEY=VALUE")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default runs/NAME-TIME)")] = None,
    as_json: JsonOption = False,
    student: StudentOption = None,
    assignment: AssignmentOption = None,
    weaken: Annotated[
        bool,
        typer.Option(
            "--weaken",
            help="switch the drill's protection off for this run (its `weaken:` settings; "
            "services are restarted with them and restored afterwards)",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="SERVICE:CNOP_SETTING=VALUE for this run only (repeatable; a weakened run)",
        ),
    ] = None,
) -> None:
    """Run one drill and grade it; exits 0 only when every required check passed."""
    scenario = _load(name, param)
    overlay = _weaken_overlay(scenario, weaken, set_ or [], assignment)
    tags = _tags(student, assignment, [scenario.name])
    runtime = _runtime()
    out_dir = out or Path("runs") / f"{scenario.name}-{_stamp()}"
    chosen = seed if seed is not None else new_seed()
    say = _progress(as_json)
    result = _run_tagged(
        scenario, runtime, tags, seed=chosen, out_dir=out_dir, say=say, weaken=overlay
    )
    if not as_json:
        _print_result(result, out_dir, console)
    code = EXIT_OK if result.passed else EXIT_FAILED
    finish("run", code, as_json, run_dir=str(out_dir), result=result.model_dump(mode="json"))


def _weaken_overlay(
    scenario: Scenario, weaken: bool, items: list[str], assignment: Path | None
) -> dict[str, dict[str, str]]:
    """The settings `lab run --weaken/--set` puts in force for one run."""
    if (weaken or items) and assignment is not None:
        _usage_error("--weaken and --set cannot change an assignment's settings")
    overlay: dict[str, dict[str, str]] = {}
    if weaken:
        if not scenario.weaken:
            _usage_error(f"{scenario.name} has no `weaken:` settings; use --set")
        overlay = {service: dict(env) for service, env in scenario.weaken.items()}
    for service, env in _parse_settings(items).items():
        overlay.setdefault(service, {}).update(env)
    return overlay


def _run_tagged(
    scenario: Scenario,
    runtime: Runtime,
    tags: RunTags,
    *,
    seed: int,
    out_dir: Path,
    say: Callable[[str], None],
    weaken: Mapping[str, Mapping[str, str]] | None = None,
) -> RunResult:
    """One run as `lab run` and `lab drill` make it: under an assignment's settings or those
    of `--weaken/--set` (then it is a weakened run of exactly those), tagged and sealed for
    submission."""
    settings = tags.assignment.settings if tags.assignment else dict(weaken or {})
    applied = (
        assigned_settings(runtime, tags, say)
        if tags.assignment
        else _settings_in_force(runtime, settings, say)
    )
    try:
        with applied:
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
    as_json: JsonOption = False,
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
    say = _progress(as_json)
    shown = err_console if as_json else console
    for scenario in loaded:
        shown.rule(f"{scenario.name}: {scenario.title}")
        run_dir = out_dir / scenario.name
        result = _run_tagged(scenario, runtime, tags, seed=chosen, out_dir=run_dir, say=say)
        _print_result(result, run_dir, shown)
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
    shown.print(table)
    shown.print(
        f"total {time.monotonic() - started:.1f}s; index: {out_dir / 'index.html'}",
        highlight=False,
    )
    code = EXIT_OK if results and all(r.passed for _, r in results) else EXIT_FAILED
    finish(
        "drill",
        code,
        as_json,
        seed=chosen,
        index=str(out_dir / "index.html"),
        runs=[_run_summary(run_dir, result) for run_dir, result in results],
    )


def _run_summary(run_dir: Path, result: RunResult) -> dict[str, object]:
    return {
        "scenario": result.scenario,
        "passed": result.passed,
        "score": result.score,
        "max_score": result.max_score,
        "mode": result.mode,
        "duration_s": round(result.duration_s, 3),
        "failed_checks": [c.id for c in result.checks if not c.passed],
        "run_dir": str(run_dir),
    }


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder holding result.json")],
    as_json: JsonOption = False,
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
    if not as_json:
        console.print(f"rendered {target / 'report.html'}", highlight=False)
    finish("report", EXIT_OK, as_json, report=str(target / "report.html"))


def reset(as_json: JsonOption = False) -> None:
    """Undo any drill's leftovers: faults, limiter/lock/block keys, paused, stopped and
    reconfigured services, and every flaw switched on."""
    runtime = _runtime()
    say = _progress(as_json)
    # Components first: clearing faults and keys needs Redis, which a crash may have taken down.
    states = {s.name: s.state for s in runtime.status()}
    resumed: list[str] = []
    started: list[str] = []
    for name in [*INFRA, *SERVICES]:
        state = states.get(name)
        if state == "paused":
            say(f"resume {name}")
            runtime.resume(name)
            resumed.append(name)
        elif state in ("stopped", "exited"):
            say(f"start {name}")
            runtime.start(name)
            started.append(name)
    cleared = runtime.clear_faults()
    say(f"cleared {cleared} fault flags")
    flawed = sorted(runtime.flaws_in_force())
    if flawed:
        say(f"flaws off: {', '.join(flawed)}")
        runtime.set_flaws({})
    say(f"{', '.join(SERVICES)}: default settings")
    runtime.reconfigure_many(dict.fromkeys(SERVICES))
    keys = runtime.clear_state_keys()
    say(f"cleared {keys} state keys; the platform is back to its defaults")
    finish(
        "reset",
        EXIT_OK,
        as_json,
        fault_flags_cleared=cleared,
        resumed=resumed,
        started=started,
        state_keys_cleared=keys,
        flaws_switched_off=flawed,
    )


def selftest(
    only: Annotated[
        str | None,
        typer.Option(
            help="just this scenario (with --security: this flaw)",
            autocompletion=_complete_scenario,
        ),
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
    engine: Annotated[
        str | None,
        typer.Option(help="with --security: the hardened scan's engine (default schemathesis)"),
    ] = None,
    max_time: Annotated[
        int | None,
        typer.Option(
            help="with --security: the hardened scan's time budget in seconds (default: the "
            "profile's)",
            min=10,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prove each drill's checks: hardened they pass, with the protection off they fail.

    With --security: the hardened platform's offline scan finds nothing at WARN or above, and
    each flaw of security/flaws.yaml, switched on alone, is named by a finding."""
    if security:
        from scenarios.cli_security import security_selftest

        security_selftest(only, out, seed, engine=engine, max_time=max_time)
        return
    if engine is not None or max_time is not None:
        _usage_error("--engine and --max-time go with --security (the scans' selftest)")
    names = [only] if only else list(available())
    loaded = [_load(name) for name in names]
    tags = _tags(student, None, names)
    runtime = _runtime()
    out_dir = out or Path("runs") / f"selftest-{_stamp()}"
    chosen = seed if seed is not None else new_seed()
    say = _progress(as_json)
    shown = err_console if as_json else console
    outcomes = []
    results: list[tuple[Path, RunResult]] = []
    expectations: list[Expectation] = []
    for scenario in loaded:
        shown.rule(f"selftest {scenario.name}")
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
    comparison = compare_selftest([(o.scenario, o.hardened, o.weakened) for o in outcomes])
    render_index(results, out_dir, expectations=expectations, comparison=comparison)
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
    shown.print(table)
    shown.print(f"index: {out_dir / 'index.html'}", highlight=False)
    code = EXIT_OK if outcomes and all(o.ok for o in outcomes) else EXIT_FAILED
    finish(
        "selftest",
        code,
        as_json,
        seed=chosen,
        index=str(out_dir / "index.html"),
        scenarios=[
            {
                "scenario": o.scenario,
                "ok": o.ok,
                "hardened_ok": o.hardened_ok,
                "weakened_ok": o.weakened_ok,
                "problems": o.problems,
                "checks": [row.as_dict() for row in comparison.rows(o.scenario)],
            }
            for o in outcomes
        ],
    )
