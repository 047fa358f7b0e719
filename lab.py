"""`lab`: the CNOP Lab command line (installed by pyproject's ``[project.scripts]``).

A thin Typer app: each area registers its commands from its own module, so the platform commands,
the drills and the image builder evolve separately. A module that is not installed (yet) is
skipped, never fatal. Errors print one line on stderr and exit with a code an autograder can
tell apart (0 passed, 1 graded and failed, 2 usage error, 3 could not run or grade; see
:mod:`scenarios.cli_support` and docs/cli.md); set ``CNOP_LAB_DEBUG=1`` to see a traceback for
an unexpected error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from scenarios.cli_support import LabGroup

COMMAND_MODULES = (
    "scenarios.cli_platform",
    "scenarios.cli_query",
    "scenarios.cli_drills",
    "scenarios.cli_images",
    "scenarios.cli_instructor",
    "scenarios.cli_bench",
    "scenarios.cli_student",
    "scenarios.cli_flaws",
    "scenarios.cli_security",
)

# The module that registers each command, so `lab up` imports the platform commands only: a
# third of a second less for every command a student types. `lab`, `lab --help`, completion
# and any other word import them all (tests/harness/test_cli_contract.py keeps this true).
COMMAND_MODULE = {
    **dict.fromkeys(["up", "down", "status", "logs", "walkthrough"], "scenarios.cli_platform"),
    "query": "scenarios.cli_query",
    **dict.fromkeys(
        ["scenarios", "run", "drill", "report", "reset", "selftest"], "scenarios.cli_drills"
    ),
    "images": "scenarios.cli_images",
    **dict.fromkeys(["submit", "grade", "assignment"], "scenarios.cli_instructor"),
    "bench": "scenarios.cli_bench",
    **dict.fromkeys(["hint", "config"], "scenarios.cli_student"),
    **dict.fromkeys(["flaws", "flaw"], "scenarios.cli_flaws"),
    "scan": "scenarios.cli_security",
}


def build_app(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
    """The `lab` app with the commands of ``modules``."""
    built = typer.Typer(
        cls=LabGroup,
        name="lab",
        help="CNOP Lab: run the trading platform, attack it, break it, and grade how it holds up.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion, --show-completion
        pretty_exceptions_enable=False,
    )

    # A group even with one module of one command: Typer would make that command the app.
    @built.callback()
    def _group() -> None:
        pass

    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:  # present but broken: the other commands still work
                print(f"lab: {name} skipped: {exc}", file=sys.stderr)
            continue
        module.register(built)
    return built


def modules_for(args: Sequence[str]) -> tuple[str, ...]:
    """What a command line needs imported: its command's module, or every module."""
    if args and args[0] in COMMAND_MODULE and "_LAB_COMPLETE" not in os.environ:
        return (COMMAND_MODULE[args[0]],)
    return COMMAND_MODULES


def main() -> None:
    """The console script (pyproject's ``[project.scripts]``)."""
    build_app(modules_for(sys.argv[1:]))()


def __getattr__(name: str) -> Any:
    """``from lab import app``: the app with every command (tests, and anyone embedding it)."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module 'lab' has no attribute {name!r}")


if __name__ == "__main__":
    main()
