"""`lab flaws` and `lab flaw on|off`: the security catalogue's holes, listed and switched.

An unknown flaw name is a usage error (one line naming the closest flaw, exit 2), like an
unknown scenario; a platform that is not running is one line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from scenarios.cli_support import EXIT_OK, JsonOption, finish
from scenarios.config import LabConfig
from scenarios.flaws import FlawError, apply_flaws, flaws_on, get_flaw, load_flaws, revoke_flaws
from scenarios.runtime import current_runtime
from scenarios.runtime.base import Runtime, RuntimeError_

console = Console()

flaw_app = typer.Typer(
    help="Switch a flaw of security/flaws.yaml on or off on the running sandbox.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("flaws")(flaws)
    app.add_typer(flaw_app, name="flaw")


def _usage_error(message: str) -> NoReturn:
    print(f"lab: {message}", file=sys.stderr)
    raise typer.Exit(2)


def check_names(names: list[str]) -> list[str]:
    """``names`` when every one is in the catalogue; a usage error naming the closest otherwise."""
    catalogue = load_flaws()
    try:
        return [get_flaw(name, catalogue).name for name in names]
    except FlawError as exc:
        _usage_error(str(exc))


def _running() -> Runtime:
    runtime = current_runtime(LabConfig())
    if runtime is None or not runtime.is_up():
        raise RuntimeError_("the platform is not running; run `lab up` first")
    return runtime


def flaws(
    as_json: Annotated[bool, typer.Option("--json", help="the catalogue as JSON")] = False,
) -> None:
    """List the flaws you can switch on (and which are on, when a sandbox runs)."""
    catalogue = load_flaws()
    runtime = current_runtime(LabConfig())
    on = set(flaws_on(runtime)) if runtime is not None and runtime.is_up() else set()
    if as_json:
        doc = [
            {**f.model_dump(by_alias=True, exclude_none=True), "on": f.name in on}
            for f in catalogue.values()
        ]
        finish("flaws", EXIT_OK, True, flaws=doc)
    table = Table(title="flaws (security/flaws.yaml)", header_style="bold")
    for column in ("flaw", "on", "OWASP", "CWE", "what it opens", "services"):
        table.add_column(column, no_wrap=column == "flaw")
    for f in catalogue.values():
        table.add_row(
            f.name,
            "[red]on[/red]" if f.name in on else "-",
            f.owasp_id,
            str(f.cwe),
            f.title,
            ", ".join(f.services),
        )
    console.print(table)
    console.print("`lab flaw on NAME` opens one on the running sandbox; `lab reset` closes all")


@flaw_app.command("on")
def flaw_on(
    names: Annotated[list[str], typer.Argument(help="flaw names (`lab flaws` lists them)")],
    as_json: JsonOption = False,
) -> None:
    """Switch flaws on; only the services they concern restart."""
    _switch("on", apply_flaws, names, as_json)


@flaw_app.command("off")
def flaw_off(
    names: Annotated[list[str], typer.Argument(help="flaw names (`lab flaws` lists them)")],
    as_json: JsonOption = False,
) -> None:
    """Switch flaws off; only the services they concern restart."""
    _switch("off", revoke_flaws, names, as_json)


def _switch(
    verb: str, change: Callable[[Runtime, list[str]], list[str]], names: list[str], as_json: bool
) -> None:
    chosen = check_names(names)
    runtime = _running()
    spinner = (
        nullcontext() if as_json else console.status(f"switching {verb} {', '.join(chosen)}...")
    )
    with spinner:
        restarted = change(runtime, chosen)
    if as_json:
        finish(f"flaw {verb}", EXIT_OK, True, restarted=restarted, flaws_on=flaws_on(runtime))
    _report(runtime, restarted)


@flaw_app.command("probe")
def flaw_probe(
    names: Annotated[
        list[str] | None, typer.Argument(help="flaw names (default: every flaw)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="every request and answer as JSON")
    ] = False,
) -> None:
    """Send each flaw's probe through the gateway and say whether the hole is open.

    Exit 0 when every verdict is clear (open or closed), 1 when one is unclear."""
    from scenarios.flaw_probe import run_probe

    catalogue = load_flaws()
    chosen = check_names(names) if names else list(catalogue)
    runtime = _running()
    gateway = runtime.endpoints().gateway
    on = set(flaws_on(runtime))
    outcomes = [run_probe(catalogue[name], gateway) for name in chosen]
    if as_json:
        doc = [{**o.as_dict(), "switched_on": o.flaw in on} for o in outcomes]
        unclear = any(o.verdict == "unclear" for o in outcomes)
        finish("flaw probe", 1 if unclear else EXIT_OK, True, probes=doc)
    else:
        table = Table(title=f"flaw probes via {gateway}", header_style="bold")
        for column in ("flaw", "switched on", "probe says", "answer", "what it shows"):
            table.add_column(column)
        colours = {"open": "red", "closed": "green", "unclear": "yellow"}
        for o in outcomes:
            colour = colours[o.verdict]
            table.add_row(
                o.flaw,
                "yes" if o.flaw in on else "-",
                f"[{colour}]{o.verdict}[/{colour}]",
                str(o.response.get("status", "-")),
                o.shows if o.verdict == "open" else "; ".join(o.notes)[:80],
            )
        console.print(table)
    if any(o.verdict == "unclear" for o in outcomes):
        raise typer.Exit(1)


def _report(runtime: Runtime, restarted: list[str]) -> None:
    on = flaws_on(runtime)
    console.print(
        f"restarted: {', '.join(restarted) or 'nothing (no change)'}; "
        f"flaws on: {', '.join(on) or 'none (hardened)'}",
        highlight=False,
    )
