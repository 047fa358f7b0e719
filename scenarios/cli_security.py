"""`lab scan`: scan the running sandbox through its gateway and grade what the scanners find.

``--flaw NAME`` switches catalogue flaws on for the scan only (the flaws on before are restored
after). An unknown scan, engine or flaw is a usage error (exit 2); an engine that cannot run here
(no Docker, no ZAP image, no wapiti) is one line naming ``--engine schemathesis`` (exit 3,
"could not run", as in docs/cli.md). Exit 0 only when no finding is at WARN or above.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grader.findings import OWASP_API_2023
from grader.model import RunResult
from scenarios.cli_support import EXIT_FAILED, EXIT_OK, finish
from scenarios.config import LabConfig
from scenarios.engine import new_seed
from scenarios.runtime import current_runtime
from scenarios.runtime.base import Runtime, RuntimeError_
from scenarios.security.scan import (
    ENGINES,
    PROFILES,
    ScanOptions,
    run_scan,
    zap_report_problem,
)
from scenarios.security.target import ScanError

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


def _usage_error(message: str) -> NoReturn:
    print(f"lab: {message}", file=sys.stderr)
    raise typer.Exit(2)


def _runtime() -> Runtime:
    runtime = current_runtime(LabConfig())
    if runtime is None or not runtime.is_up():
        raise RuntimeError_("the platform is not running; run `lab up` first")
    return runtime


def print_scan(result: RunResult, out_dir: Path | None, target: Console) -> None:
    """The findings at WARN or above per category, and the verdict."""
    table = Table(title=f"{result.scenario} ({result.mode_label}, seed {result.seed})")
    table.add_column("category", no_wrap=True)
    table.add_column("level")
    table.add_column("finding")
    table.add_column("where")
    table.add_column("flaw")
    shown = 0
    for finding in sorted(result.findings, key=lambda f: (f.owasp, f.level, f.rule)):
        if not finding.gated:
            continue
        shown += 1
        table.add_row(
            finding.owasp.split(":")[0] if finding.owasp in OWASP_API_2023 else "other",
            "[red]FAIL[/]" if finding.level == "FAIL" else "[yellow]WARN[/]",
            f"{finding.title} ({finding.engine}:{finding.rule})",
            finding.where[:70],
            finding.flaw or "",
        )
    if shown:
        target.print(table)
    else:
        target.print("no finding at WARN or above", highlight=False)
    for error in result.errors:
        target.print(f"[red]error:[/] {error}", highlight=False)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    where = f"  report: {out_dir / 'report.html'}" if out_dir else ""
    flaws = f"; flaws on: {', '.join(result.flaws)}" if result.flaws else ""
    target.print(
        f"{verdict} score {result.score}/{result.max_score}, {len(result.findings)} findings "
        f"({shown} at WARN or above) in {result.duration_s:.1f}s{flaws}{where}"
    )


def scan(
    profile: Annotated[
        str, typer.Argument(help="baseline (passive), api (the API description) or full")
    ] = "api",
    engine: Annotated[
        str,
        typer.Option(help="zap (Docker), schemathesis (offline), wapiti (offline) or probe"),
    ] = "schemathesis",
    flaw: Annotated[
        list[str] | None,
        typer.Option("--flaw", help="switch this flaw on for the scan (repeatable; `lab flaws`)"),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="recorded in the run; schemathesis makes the same cases every run"),
    ] = None,
    max_time: Annotated[
        int | None,
        typer.Option(help="the engine's time budget in seconds (default: the profile's)", min=10),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default runs/scan-...)")] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="with --engine zap: grade this ZAP JSON report (zap-*.py -J) instead of running "
            "ZAP (no Docker needed; the probes still run)"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the result as JSON on stdout")
    ] = False,
) -> None:
    """Scan the sandbox through the gateway; grade the findings per OWASP API Top 10 category."""
    if profile not in PROFILES:
        _usage_error(f"unknown scan {profile!r}; one of: {', '.join(PROFILES)}")
    if engine not in ENGINES:
        _usage_error(f"unknown engine {engine!r}; one of: {', '.join(ENGINES)}")
    problem = zap_report_problem(engine, report)
    if problem is not None:
        _usage_error(problem)
    names: list[str] = []
    if flaw:
        from scenarios.cli_flaws import check_names

        names = check_names(flaw)
    runtime = _runtime()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or Path("runs") / f"scan-{profile}-{engine}-{stamp}"
    options = ScanOptions(
        profile=profile,
        engine=engine,
        seed=seed if seed is not None else new_seed(),
        max_time_s=max_time,
        zap_report=report,
    )
    target = err_console if as_json else console

    def say(text: str) -> None:
        target.print(text, highlight=False, markup=False)

    try:
        result = scan_with_flaws(runtime, options, names, out_dir, say)
    except ScanError as exc:
        raise RuntimeError_(str(exc)) from exc
    code = EXIT_OK if result.passed else EXIT_FAILED
    if as_json:
        document = json.loads(result.model_dump_json())
        finish("scan", code, True, run_dir=str(out_dir) if out_dir else None, result=document)
    print_scan(result, out_dir, console)
    raise typer.Exit(code)


def scan_with_flaws(
    runtime: Runtime,
    options: ScanOptions,
    flaws: list[str],
    out_dir: Path | None,
    say: Callable[[str], None] | None = None,
) -> RunResult:
    """One scan with exactly ``flaws`` on (none: the flaws on now stay as they are); the flaws
    on before are on again after, also when the scan fails."""
    if not flaws:
        return run_scan(runtime, options, out_dir=out_dir, progress=say)
    from scenarios.flaws import flaw_layer
    from scenarios.security.selftest import switch_flaws

    before = runtime.flaws_in_force()
    if say:
        say(f"flaws on for this scan: {', '.join(flaws)}")
    try:
        switch_flaws(runtime, flaw_layer(flaws))
        return run_scan(runtime, options, out_dir=out_dir, progress=say)
    finally:
        if say:
            say("flaws back as they were" + (f": {', '.join(sorted(before))}" if before else ""))
        switch_flaws(runtime, before)


def security_selftest(
    only: str | None,
    out: Path | None,
    seed: int | None,
    *,
    engine: str | None = None,
    max_time: int | None = None,
) -> None:
    """`lab selftest --security` (see :mod:`scenarios.security.selftest`); exits 0 only when
    every promise held."""
    from grader.report import render_index
    from scenarios.security.selftest import run_security_selftest

    chosen_engine = engine or "schemathesis"
    if chosen_engine not in ENGINES:
        _usage_error(f"unknown engine {chosen_engine!r}; one of: {', '.join(ENGINES)}")
    names: list[str] | None = None
    if only:
        from scenarios.cli_flaws import check_names

        names = check_names([only])
    runtime = _runtime()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or Path("runs") / f"selftest-security-{stamp}"
    chosen = seed if seed is not None else new_seed()

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    try:
        outcome = run_security_selftest(
            runtime,
            seed=chosen,
            out_dir=out_dir,
            only=names,
            engine=chosen_engine,
            max_time_s=max_time,
            progress=say,
        )
    except ScanError as exc:
        raise RuntimeError_(str(exc)) from exc
    rows = outcome.runs(out_dir)
    render_index(
        [(path, result) for path, result, _ in rows],
        out_dir,
        expectations=[expectation for _, _, expectation in rows],
    )
    table = Table(title=f"security selftest (seed {chosen})", expand=False)
    table.add_column("run")
    table.add_column("hardened: no finding names it")
    table.add_column("on: a finding names it")
    table.add_column("notes")
    table.add_row(
        "hardened scan",
        "[green]yes[/]" if outcome.hardened_ok else "[red]no[/]",
        "-",
        "; ".join(outcome.problems)[:160],
    )
    for f in outcome.flaws:
        table.add_row(
            f.flaw,
            "[green]yes[/]" if f.hardened_silent else "[red]no[/]",
            "[green]yes[/]" if f.found else "[red]no[/]",
            "; ".join(f.problems)[:160],
        )
    console.print(table)
    console.print(f"index: {out_dir / 'index.html'}", highlight=False)
    raise typer.Exit(0 if outcome.ok else 1)
