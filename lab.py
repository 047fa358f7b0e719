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
import sys

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


app = typer.Typer(
    cls=LabGroup,
    name="lab",
    help="CNOP Lab: run the trading platform, attack it, break it, and grade how it holds up.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ImportError as _exc:
        if _exc.name != _name:  # present but broken: the other commands still work
            print(f"lab: {_name} skipped: {_exc}", file=sys.stderr)
        continue
    _module.register(app)


if __name__ == "__main__":
    app()
