"""`lab hint` and `lab config`: a student's hints, and settings a student changes to fix things.

``lab hint LAB [N]`` reveals a lab's hints from ``labs/hints.yaml`` one at a time and records
each reveal (:mod:`scenarios.hints`). ``lab config set SERVICE KEY=VALUE...`` restarts just that
service with the settings (checked first by the service's own settings class, in a subprocess:
``python -m cnop.settings_check``); ``lab config show`` lists what the student set;
``lab config unset`` takes settings back. ``lab up --assignment FILE`` starts a challenge
(:func:`prepare_challenge`). Usage errors print one line and exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grader.assignments import AssignmentError, challenge_key, load_assignment
from scenarios.cli_support import EXIT_OK, JsonOption, finish
from scenarios.config import LabConfig
from scenarios.hints import SCAN_HINTS, HintError, find_lab, reveal
from scenarios.runtime import current_runtime
from scenarios.runtime.base import SERVICES, Runtime, RuntimeError_
from scenarios.runtime.hidden import active_challenge, install_challenge, remove_challenge
from scenarios.runtime.sandbox import read_state

console = Console()
config_app = typer.Typer(
    help="Change a service's settings (and restart only it), or show what you changed.",
    no_args_is_help=True,
)
# Settings the lab itself gives every service (addresses, secrets, names): not the student's.
LAB_MANAGED = frozenset(
    {
        "CNOP_SERVICE_NAME",
        "CNOP_HOST",
        "CNOP_PORT",
        "CNOP_METRICS_PORT",
        "CNOP_REDIS_URL",
        "CNOP_DYNAMODB_ENDPOINT",
        "CNOP_JWT_SECRET",
        "CNOP_INTERNAL_SECRET",
        "CNOP_TABLE_PREFIX",
        "CNOP_CORS_ORIGINS",
        "CNOP_LOG_LEVEL",
        *(f"CNOP_{s.upper()}_URL" for s in SERVICES),
    }
)


def register(app: typer.Typer) -> None:
    app.command("hint")(hint)
    app.add_typer(config_app, name="config")


def _spinner(text: str, quiet: bool) -> AbstractContextManager[object]:
    return nullcontext() if quiet else console.status(text)


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"lab: {message}", file=sys.stderr)
    raise typer.Exit(code)


# ==================================================================== hints
def hint(
    lab: Annotated[
        str,
        typer.Argument(help="a lab's number (3, 03), a security lab's id (S2) or its drill's name"),
    ],
    number: Annotated[
        int | None, typer.Argument(help="which hint (default: the next you have not seen)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Reveal a lab's hints one at a time (then its answer sketch); each reveal is recorded."""
    home = LabConfig().home
    try:
        found = find_lab(lab)
        shown, first = reveal(home, found, number)
    except HintError as exc:
        _fail(str(exc))
    total = len(found.hints)
    if as_json:
        finish(
            "hint",
            EXIT_OK,
            True,
            lab=found.lab,
            scenario=found.scenario,
            number=shown.number,
            of=total,
            title=shown.title,
            text=shown.text,
            first_reveal=first,
        )
    console.rule(f"{found.title}: {shown.title} ({shown.number} of {total})")
    print(shown.text)  # as written: rich would wrap the catalogue's lines a second time
    console.rule()
    if first:
        console.print(
            f"recorded in {home / 'hints.json'}; your next "
            f"{'`lab scan`' if found.scenario == SCAN_HINTS else 'run of ' + found.scenario} "
            "records it (an assignment may cost points per hint)",
            highlight=False,
            style="dim",
        )
    if shown.number < total:
        console.print(f"next: `lab hint {found.lab}`", highlight=False, style="dim")


# ==================================================================== config
def _running() -> Runtime:
    runtime = current_runtime(LabConfig())
    if runtime is None or not runtime.is_up():
        raise RuntimeError_("the platform is not running; `lab up` starts it")
    return runtime


def _student_settings(runtime: Runtime) -> dict[str, dict[str, str]]:
    state = read_state(runtime.config.state_file) or {}
    return {s: dict(env) for s, env in (state.get("config") or {}).items() if env}


def _check_service(service: str) -> None:
    if service not in SERVICES:
        _fail(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")


def _parse(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("CNOP_") or key != key.upper():
            _fail(f"{pair!r}: expected CNOP_SETTING=VALUE (see docs/settings.md)")
        if key in LAB_MANAGED or key.startswith("CNOP_LAB_"):
            _fail(f"{key} is set by the lab itself (addresses, secrets, names), not by you")
        settings[key] = value
    return settings


def check_with_service(service: str, settings: dict[str, str]) -> dict[str, str]:
    """Problems the service's own settings class finds (unknown name, bad value)."""
    pairs = [f"{k}={v}" for k, v in settings.items()]
    try:
        done = subprocess.run(  # noqa: S603 - our interpreter, fixed module, no shell
            [sys.executable, "-m", "cnop.settings_check", service, *pairs],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError_(f"could not check the settings ({exc})") from exc
    try:
        return dict(json.loads(done.stdout)["problems"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeError_(
            f"could not check the settings: {(done.stderr or done.stdout).strip()[-300:]}"
        ) from None


def _apply(runtime: Runtime, service: str, wanted: dict[str, str], before: dict[str, str]) -> None:
    """Restart the service with ``wanted``; when it exits instead (settings its class accepts
    one by one but not together), back to ``before``. One that is only slow to get ready
    (a busy machine) keeps the new settings."""
    try:
        runtime.configure(service, wanted or None)
    except RuntimeError_ as exc:
        states = {s.name: s.state for s in runtime.status()}
        if states.get(service) == "running":
            raise RuntimeError_(
                f"{service} runs with the new settings but was not ready in time (a busy "
                f"machine?); `lab status` shows when it is: {str(exc).splitlines()[0]}"
            ) from None
        console.print(f"[red]{service} did not start with these settings[/]; restoring")
        runtime.configure(service, before or None)
        raise RuntimeError_(f"{service} refused the settings: {exc}") from None


@config_app.command("set")
def config_set(
    service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")],
    settings: Annotated[list[str], typer.Argument(help="CNOP_SETTING=VALUE (one or more)")],
    as_json: JsonOption = False,
) -> None:
    """Change settings of one service and restart only it (kept until `lab down`)."""
    _check_service(service)
    given = _parse(settings)
    problems = check_with_service(service, given)
    if problems:
        _fail("; ".join(f"{k}: {v}" for k, v in problems.items()))
    runtime = _running()
    before = _student_settings(runtime).get(service, {})
    wanted = {**before, **given}
    with _spinner(f"restarting {service}...", as_json):
        _apply(runtime, service, wanted, before)
    if as_json:
        finish("config set", EXIT_OK, True, service=service, settings=wanted)
    shown = ", ".join(f"{k}={v}" for k, v in given.items())
    console.print(f"[green]{service}[/] restarted with {shown}", highlight=False)


@config_app.command("unset")
def config_unset(
    service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")],
    keys: Annotated[
        list[str] | None, typer.Argument(help="settings to take back (default: all of them)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Take back settings you set on a service and restart only it."""
    _check_service(service)
    runtime = _running()
    before = _student_settings(runtime).get(service, {})
    unknown = [k for k in keys or [] if k not in before]
    if unknown:
        _fail(f"you did not set {', '.join(unknown)} on {service} (`lab config show`)")
    wanted = {k: v for k, v in before.items() if keys and k not in keys}
    if wanted == before:
        if as_json:
            finish("config unset", EXIT_OK, True, service=service, settings=before)
        console.print(f"{service}: nothing to take back", highlight=False)
        return
    with _spinner(f"restarting {service}...", as_json):
        _apply(runtime, service, wanted, before)
    if as_json:
        finish("config unset", EXIT_OK, True, service=service, settings=wanted)
    console.print(f"[green]{service}[/] restarted without {', '.join(keys or before)}")


@config_app.command("show")
def config_show(
    service: Annotated[str | None, typer.Argument(help="one service (default: all)")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the settings you changed with `lab config set` (not the defaults, not hidden ones)."""
    if service is not None:
        _check_service(service)
    runtime = _running()
    mine = _student_settings(runtime)
    challenge = active_challenge(runtime.config.home)
    if as_json:
        shown = {n: mine.get(n, {}) for n in ([service] if service else SERVICES)}
        finish("config show", EXIT_OK, True, settings=shown, challenge=bool(challenge))
    table = Table(title="settings you set (`lab config set`)", header_style="bold", expand=False)
    for column in ("service", "setting", "value"):
        table.add_column(column)
    for name in [service] if service else SERVICES:
        for key, value in sorted(mine.get(name, {}).items()):
            table.add_row(name, key, value)
    console.print(table if table.row_count else "no settings changed: every service on its own")
    if challenge:
        name = (challenge.get("assignment") or {}).get("name", "?")
        console.print(
            f"challenge {name} is running: some services start with hidden settings; "
            "find them from the metrics and logs",
            highlight=False,
        )


# ==================================================================== challenges
def prepare_challenge(config: LabConfig, assignment: Path | None) -> str | None:
    """Before `lab up`: leave the assignment's challenge in the sandbox (or clear an old one);
    returns the challenge's name when there is one."""
    if assignment is None:
        remove_challenge(config.home)
        return None
    try:
        loaded = load_assignment(assignment)
    except AssignmentError as exc:
        _fail(str(exc))
    if not loaded.challenge:
        remove_challenge(config.home)
        return None
    try:
        install_challenge(config.home, loaded.ref, loaded.challenge, challenge_key(loaded))
    except (RuntimeError_, ValueError) as exc:
        _fail(f"{assignment}: {exc}")
    return loaded.name
